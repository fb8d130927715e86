//! The limiters of a `requests` room: its slots (local or shared),
//! `rate` and token budgets (`pace`), the adaptive limit, fair turns
//! (`fair`) and the usage an answer reports (`usage`).

pub mod adaptive;
pub mod fair;
pub mod pace;
pub mod slots;
pub mod token_usage;
