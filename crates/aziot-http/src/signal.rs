//! The daemons' stop signal.

/// Resolves on the first SIGTERM or SIGINT, logging which. If the handlers cannot be installed,
/// says so and never resolves (the daemon then only stops on SIGKILL).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received, shutting down"),
        _ = int.recv() => log::info!("SIGINT received, shutting down"),
    }
}
