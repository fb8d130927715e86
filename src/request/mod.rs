//! A request's facts, read once: its canonical target and host
//! (`canonical`), who the client is and what it asks for (`facts`), its
//! cookies, and the route it takes. Plain, synchronous code.

pub mod canonical;
pub mod cookies;
pub mod facts;
pub mod route;
