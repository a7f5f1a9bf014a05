//! The daemons' stop signal.

use std::future::Future;

/// Installs SIGTERM and SIGINT handlers now and returns a future that resolves on the first of
/// them, logging which. Call it before the sockets are bound, so that a stop that comes as soon
/// as a client sees the socket is a clean stop, not the default action (death by signal). If
/// the handlers cannot be installed, says so and the future never resolves (the daemon then
/// only stops on SIGKILL). Must be called from within a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM received, shutting down"),
            _ = int.recv() => log::info!("SIGINT received, shutting down"),
        }
    }
}
