//! End-to-end tests: a small service on a real Unix socket in a temp dir.

mod fixture;
mod fuzz;
mod gate;
mod limits;
mod shutdown;
mod socket;
