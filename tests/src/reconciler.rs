//! A reconciler running in the background of a test, as in `meshfleet up`.

use meshfleet_reconciler::Reconciler;
use tokio::sync::watch;

/// A reconciler running in the background, as in `up`.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
}

pub fn run(reconciler: &Reconciler) -> Running {
    let (stop, stopped) = watch::channel(false);
    let listener = reconciler.spawn_listener();
    let r = reconciler.clone();
    let task = tokio::spawn(async move { r.run(stopped).await });
    Running {
        stop,
        task,
        listener,
    }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.listener.abort();
    }

    /// As a crash would: the task is dropped wherever it is.
    pub fn kill(self) {
        self.task.abort();
        self.listener.abort();
    }
}
