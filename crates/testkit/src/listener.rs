//! The accept loop every TCP simulator runs, and the handle that stops it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::org::Organization;

/// The organization a simulator serves when its builder was given none: tenant
/// `00000000-0000-0000-0000-000000000000` with accepted domain `contoso.com`.
pub(crate) fn default_organization() -> Organization {
    Organization::builder("00000000-0000-0000-0000-000000000000", "contoso.com").build()
}

/// A running accept loop. [`shutdown`](Self::shutdown) stops it gracefully; dropping it aborts
/// it. Either way every connection task ends with it.
pub(crate) struct ServerTask {
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl ServerTask {
    /// Accepts connections on `listener` and runs `serve` for each on its own task, until
    /// stopped.
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, serve: F) -> Self
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, serve, Arc::clone(&stop)));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting, closes every connection and waits for the loop to end.
    pub(crate) async fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, serve: F, stop: Arc<Notify>)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    conns.spawn(serve(stream, peer));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stop.notified() => break,
        }
    }
    conns.shutdown().await;
}
