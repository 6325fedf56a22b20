//! The one tokio runtime of the window, on a thread of its own named `fala-net`: the
//! signaling task and the optional local server run there, never on the UI thread.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Owns the `fala-net` thread; dropping it stops the runtime and every task on it.
pub struct NetRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetRuntime {
    pub fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fala-net".into())
            .spawn(move || {
                // A current-thread runtime runs its tasks only inside block_on: park here.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(NetRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
