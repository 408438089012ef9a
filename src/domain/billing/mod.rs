//! Billing with Stripe, as pure rules: the webhook signature, the events acted on, which plan a subscription
//! gives, and how failed processing is retried.

pub mod event;
pub mod plan;
pub mod signature;
