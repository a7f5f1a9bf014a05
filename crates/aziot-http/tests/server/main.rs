//! End-to-end tests: a small service on a real Unix socket in a temp dir.

mod connections;
mod fixture;
mod fuzz;
mod gate;
mod limits;
mod shutdown;
mod socket;
