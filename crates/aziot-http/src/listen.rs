//! Choosing between a systemd-activated socket and binding the configured path.
//!
//! Upstream prefers socket activation whenever systemd passed a socket, so a
//! daemon started by its `.socket` unit never races systemd for the path.

use std::os::fd::AsFd;

use crate::bind::{bind_unix_for_group, BindError};
use crate::endpoint::Endpoint;
use crate::systemd::SystemdSockets;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("endpoint {endpoint} names a systemd socket, but {available}; start the daemon through its .socket unit or use a unix:/// endpoint")]
    NoSystemdSocket {
        endpoint: Endpoint,
        available: String,
    },
    #[error("systemd socket for {endpoint} is not a Unix stream socket: {source}; fix ListenStream= in the .socket unit")]
    NotUnix {
        endpoint: Endpoint,
        source: std::io::Error,
    },
    #[error("could not use the systemd socket for {endpoint}: {source}")]
    Adopt {
        endpoint: Endpoint,
        source: std::io::Error,
    },
}

/// Opens the listener for `endpoint`.
///
/// `fd_name` is the socket's `FileDescriptorName=` (systemd defaults it to the
/// `.socket` unit's name); it picks a socket for `unix://` endpoints when systemd
/// passed several. A socket bound here (not passed by systemd) goes to `group`, the
/// API's client group (see [`bind_unix_for_group`]). Must be called from within a
/// tokio runtime.
pub fn listen(
    endpoint: &Endpoint,
    systemd: &mut SystemdSockets,
    fd_name: &str,
    group: &str,
) -> Result<tokio::net::UnixListener, ListenError> {
    let passed = match endpoint {
        Endpoint::Fd(fd) => systemd.take_fd(*fd),
        Endpoint::FdName(name) => systemd.take(name),
        Endpoint::Unix(path) => match systemd.take(fd_name) {
            Some(listener) => Some(listener),
            None => {
                if !systemd.is_empty() {
                    log::warn!(
                        "no systemd socket named {fd_name:?} ({}); binding {} instead",
                        systemd.describe(),
                        path.display()
                    );
                }
                return Ok(bind_unix_for_group(path, group)?);
            }
        },
    };
    let Some(listener) = passed else {
        return Err(ListenError::NoSystemdSocket {
            endpoint: endpoint.clone(),
            available: systemd.describe(),
        });
    };
    adopt(endpoint, listener)
}

fn adopt(
    endpoint: &Endpoint,
    listener: std::os::unix::net::UnixListener,
) -> Result<tokio::net::UnixListener, ListenError> {
    // std refuses addresses of any other family here, which catches a TCP socket.
    let addr = listener
        .local_addr()
        .map_err(|source| ListenError::NotUnix {
            endpoint: endpoint.clone(),
            source,
        })?;
    if !is_stream_socket(&listener) {
        return Err(ListenError::NotUnix {
            endpoint: endpoint.clone(),
            source: std::io::Error::other("socket type is not SOCK_STREAM"),
        });
    }
    log::info!("using systemd socket {addr:?} for {endpoint}");
    let adopt_err = |source| ListenError::Adopt {
        endpoint: endpoint.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(adopt_err)?;
    tokio::net::UnixListener::from_std(listener).map_err(adopt_err)
}

fn is_stream_socket(fd: &impl AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one c_int into `ty`, whose size we pass in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            std::ptr::addr_of_mut!(ty).cast(),
            &mut len,
        )
    };
    rc == 0 && ty == libc::SOCK_STREAM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_endpoint_without_systemd_binds_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sock");
        let ep = Endpoint::Unix(path.clone());
        let _l = listen(&ep, &mut SystemdSockets::default(), "keyd", "no-such-group-here").unwrap();
        assert!(path.exists());
        // Without its group, the socket is for its owner only.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn fd_endpoint_without_systemd_explains_itself() {
        let err = listen(&Endpoint::Fd(3), &mut SystemdSockets::default(), "keyd", "g").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("fd://3") && msg.contains("systemd passed no sockets"),
            "{msg}"
        );
    }
}
