//! Pure HTTP concerns: the route table, body rules, CORS, the error envelope. No I/O here; the platform adapter
//! feeds these from real requests.

pub mod body;
pub mod cors;
pub mod envelope;
pub mod form_data;
pub mod routes;
