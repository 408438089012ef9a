//! Cryptography the control plane owns: sealing secrets at rest.

pub mod secret_box;
