//! The drop-in claim against upstream's own release binaries, both ways. Each case starts its own
//! swtpm, emulator and daemons in a temp dir (tools with fixed paths run in a private mount
//! namespace), runs in parallel with the others and leaves no process behind. Without upstream's
//! binaries (a plain clone) every case returns at once; `scripts/test.sh` says so.

mod aziotctl;
mod check;
mod config_apply;
mod daemons;
mod edged;
mod switching;
