//! Request middleware for the scoring routes: who is calling, and whether their plan (and the
//! gateway's global limit) admits the request.

pub mod auth;
pub mod rate_limit;
pub mod sigv4;
