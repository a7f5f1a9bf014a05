//! A tap on the TPM "bus": a TCP relay between a TPM client and a [`Swtpm`] that records every
//! byte of the TPM command channel in both directions, as a sniffer on SPI or LPC would see
//! them. Point the client at [`BusTap::tcti`]; the control channel (port + 1) is relayed too,
//! unrecorded. [`Exchange::command`] parses what was recorded into TPM commands with their
//! session areas, so a test can ask both "does this secret appear anywhere" and "did this
//! command carry an encrypting session".

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::Swtpm;

/// Bytes that went one way on one connection of the command channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToTpm,
    FromTpm,
}

/// Everything one connection carried: the swtpm TCTI opens one per command.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub to_tpm: Vec<u8>,
    pub from_tpm: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    exchanges: Mutex<Vec<(u64, Exchange)>>,
    /// Sockets of open connections, shut down when the tap is dropped so relay threads end.
    open: Mutex<Vec<(u64, TcpStream)>>,
    stopping: AtomicBool,
}

pub struct BusTap {
    port: u16,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

impl BusTap {
    /// Listens on a free port pair and relays to `tpm`'s command and control ports.
    pub fn start(tpm: &Swtpm) -> Self {
        let shared = Arc::new(Shared::default());
        for _ in 0..50 {
            let port = crate::free_port_pair();
            let (Ok(data), Ok(ctrl)) = (
                TcpListener::bind((Ipv4Addr::LOCALHOST, port)),
                TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)),
            ) else {
                continue;
            };
            let acceptors = vec![
                accept_loop(data, tpm.port(), true, shared.clone()),
                accept_loop(ctrl, tpm.port() + 1, false, shared.clone()),
            ];
            return Self { port, shared, acceptors };
        }
        panic!("no free port pair for the bus tap");
    }

    /// The TCTI string that goes through the tap.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// What crossed so far, one entry per connection, in the order they were opened.
    pub fn exchanges(&self) -> Vec<Exchange> {
        let mut all = self.shared.exchanges.lock().unwrap().clone();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        self.shared.exchanges.lock().unwrap().clear();
    }

    /// The commands recorded so far, parsed, each with the response it got.
    pub fn commands(&self) -> Vec<(TpmCommand, Vec<u8>)> {
        let mut out = Vec::new();
        for exchange in self.exchanges() {
            let responses = split_frames(&exchange.from_tpm);
            for (i, frame) in split_frames(&exchange.to_tpm).into_iter().enumerate() {
                if let Some(command) = TpmCommand::parse(frame) {
                    out.push((command, responses.get(i).map(|r| r.to_vec()).unwrap_or_default()));
                }
            }
        }
        out
    }

    /// Where `needle` appears in the recording, as (connection, direction), in either
    /// direction of any connection.
    pub fn find(&self, needle: &[u8]) -> Vec<(usize, Direction)> {
        let mut hits = Vec::new();
        for (i, e) in self.exchanges().iter().enumerate() {
            for (dir, bytes) in [(Direction::ToTpm, &e.to_tpm), (Direction::FromTpm, &e.from_tpm)] {
                if !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push((i, dir));
                }
            }
        }
        hits
    }
}

impl Drop for BusTap {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (_, stream) in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the acceptors so they see `stopping`.
        for port in [self.port, self.port + 1] {
            let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        }
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: u16, record: bool, shared: Arc<Shared>) -> JoinHandle<()> {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let id = CONNECTIONS.fetch_add(1, Ordering::SeqCst);
            if record {
                shared.exchanges.lock().unwrap().push((id, Exchange::default()));
            }
            {
                let mut open = shared.open.lock().unwrap();
                open.extend([client.try_clone(), server.try_clone()].into_iter().flatten().map(|s| (id, s)));
            }
            let relays = Arc::new(AtomicU64::new(2));
            for (from, to, dir) in [
                (client.try_clone(), server.try_clone(), Direction::ToTpm),
                (server.try_clone(), client.try_clone(), Direction::FromTpm),
            ] {
                let (Ok(from), Ok(to)) = (from, to) else { continue };
                let (shared, relays) = (shared.clone(), relays.clone());
                std::thread::spawn(move || {
                    relay(from, to, dir, record.then_some(id), &shared);
                    if relays.fetch_sub(1, Ordering::SeqCst) == 1 {
                        shared.open.lock().unwrap().retain(|(i, _)| *i != id);
                    }
                });
            }
        }
    })
}

/// Copies until EOF, recording what passes; then half-closes the other side.
fn relay(mut from: TcpStream, mut to: TcpStream, dir: Direction, record: Option<u64>, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(id) = record {
            let mut all = shared.exchanges.lock().unwrap();
            if let Some((_, e)) = all.iter_mut().find(|(i, _)| *i == id) {
                match dir {
                    Direction::ToTpm => e.to_tpm.extend_from_slice(&buf[..n]),
                    Direction::FromTpm => e.from_tpm.extend_from_slice(&buf[..n]),
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Splits a byte stream into TPM command or response frames by their header's size field.
fn split_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while bytes.len() >= 10 {
        let size = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        if size < 10 || size > bytes.len() {
            break;
        }
        let (frame, rest) = bytes.split_at(size);
        frames.push(frame);
        bytes = rest;
    }
    frames
}

/// TPM_ST_SESSIONS: the command has an authorization area.
const ST_SESSIONS: u16 = 0x8002;
/// TPM_RS_PW: the password "session".
pub const PASSWORD_SESSION: u32 = 0x4000_0009;

/// A TPM command as recorded: its code, handles and sessions (parameters left as bytes).
#[derive(Debug, Clone)]
pub struct TpmCommand {
    pub code: u32,
    pub handles: Vec<u32>,
    pub sessions: Vec<SessionArea>,
    pub parameters: Vec<u8>,
}

/// One entry of a command's authorization area.
#[derive(Debug, Clone, Copy)]
pub struct SessionArea {
    pub handle: u32,
    /// TPMA_SESSION.
    pub attributes: u8,
}

impl SessionArea {
    pub fn is_password(&self) -> bool {
        self.handle == PASSWORD_SESSION
    }

    /// The first command parameter is encrypted.
    pub fn decrypt(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// The first response parameter is encrypted.
    pub fn encrypt(&self) -> bool {
        self.attributes & 0x40 != 0
    }
}

impl TpmCommand {
    /// The command's name for messages, e.g. "TPM2_Unseal".
    pub fn name(&self) -> String {
        command_info(self.code).map_or_else(|| format!("TPM_CC {:#06x}", self.code), |(name, _)| format!("TPM2_{name}"))
    }

    /// Parses a command frame. Commands this table does not know keep their handles (and
    /// sessions) inside `parameters`.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let be16 = |b: &[u8], at: usize| Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
        let be32 = |b: &[u8], at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
        let tag = be16(frame, 0)?;
        let code = be32(frame, 6)?;
        let Some((_, handle_count)) = command_info(code) else {
            return Some(Self { code, handles: Vec::new(), sessions: Vec::new(), parameters: frame.get(10..)?.to_vec() });
        };
        let mut at = 10;
        let mut handles = Vec::new();
        for _ in 0..handle_count {
            handles.push(be32(frame, at)?);
            at += 4;
        }
        let mut sessions = Vec::new();
        if tag == ST_SESSIONS {
            let area = be32(frame, at)? as usize;
            at += 4;
            let end = at + area;
            while at < end {
                let handle = be32(frame, at)?;
                at += 4;
                at += 2 + usize::from(be16(frame, at)?); // nonce
                let attributes = *frame.get(at)?;
                at += 1;
                at += 2 + usize::from(be16(frame, at)?); // hmac
                sessions.push(SessionArea { handle, attributes });
            }
        }
        Some(Self { code, handles, sessions, parameters: frame.get(at..)?.to_vec() })
    }
}

/// Name and number of handles of the commands a keyd-tpm test looks at.
fn command_info(code: u32) -> Option<(&'static str, usize)> {
    Some(match code {
        0x120 => ("EvictControl", 2),
        0x129 => ("HierarchyChangeAuth", 1),
        0x131 => ("CreatePrimary", 1),
        0x13E => ("SequenceComplete", 1),
        0x147 => ("ActivateCredential", 2),
        0x14E => ("NV_Read", 2),
        0x151 => ("PolicySecret", 2),
        0x153 => ("Create", 1),
        0x155 => ("HMAC", 1),
        0x156 => ("Import", 1),
        0x157 => ("Load", 1),
        0x159 => ("RSA_Decrypt", 1),
        0x15B => ("HMAC_Start", 1),
        0x15C => ("SequenceUpdate", 1),
        0x15D => ("Sign", 1),
        0x15E => ("Unseal", 1),
        0x161 => ("ContextLoad", 0),
        0x162 => ("ContextSave", 1),
        0x165 => ("FlushContext", 0),
        0x167 => ("LoadExternal", 0),
        0x169 => ("NV_ReadPublic", 1),
        0x173 => ("ReadPublic", 1),
        0x176 => ("StartAuthSession", 2),
        0x17A => ("GetCapability", 0),
        0x17B => ("GetRandom", 0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_a_password_and_an_hmac_session_parses() {
        // TPM2_ActivateCredential: 2 handles, a password session and an HMAC session.
        let mut f = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x47];
        f.extend_from_slice(&0x8100_0001u32.to_be_bytes());
        f.extend_from_slice(&0x8101_0001u32.to_be_bytes());
        let mut area = Vec::new();
        area.extend_from_slice(&PASSWORD_SESSION.to_be_bytes());
        area.extend_from_slice(&[0, 0, 0x01, 0, 0]);
        area.extend_from_slice(&0x0200_0000u32.to_be_bytes());
        area.extend_from_slice(&[0, 2, 0xaa, 0xbb, 0x41, 0, 1, 0xcc]);
        f.extend_from_slice(&(area.len() as u32).to_be_bytes());
        f.extend_from_slice(&area);
        f.extend_from_slice(&[0, 1, 0x99]);
        let size = f.len() as u32;
        f[2..6].copy_from_slice(&size.to_be_bytes());
        let c = TpmCommand::parse(&f).unwrap();
        assert_eq!(c.name(), "TPM2_ActivateCredential");
        assert_eq!(c.handles, [0x8100_0001, 0x8101_0001]);
        assert_eq!(c.sessions.len(), 2);
        assert!(c.sessions[0].is_password() && !c.sessions[0].encrypt());
        assert!(!c.sessions[1].is_password() && c.sessions[1].encrypt() && !c.sessions[1].decrypt());
        assert_eq!(c.parameters, [0, 1, 0x99]);
        assert_eq!(split_frames(&[f.clone(), f].concat()).len(), 2);
    }
}
