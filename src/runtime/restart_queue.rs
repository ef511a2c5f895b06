//! The restarts instances ask for themselves (a failing health check),
//! carried out by the engine in the order asked, each like a user's
//! restart (rolling where the app is replaced rolling). An instance cannot
//! restart itself gracefully: the engine owns the rollout and the app's lock.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::{Engine, RestartRequest};

/// Serves `requests` in one of the engine's tasks, until shutdown begins or
/// the engine is gone (the task holds it weakly, so it never keeps it alive).
pub(super) fn serve(engine: &Arc<Engine>, mut requests: UnboundedReceiver<RestartRequest>) {
    let weak = Arc::downgrade(engine);
    let closing = engine.closing.clone();
    engine.tasks.spawn(async move {
        loop {
            let request = tokio::select! {
                () = closing.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            let Some(engine) = weak.upgrade() else { return };
            engine.spawn(restart(Arc::clone(&engine), request));
        }
    });
}

/// Carries out one request; a failure is logged (no one waits for it).
async fn restart(engine: Arc<Engine>, request: RestartRequest) {
    let RestartRequest {
        project,
        app,
        instance,
        reason,
    } = request;
    if let Err(err) = engine
        .restart_for(&project, &app, Some(instance), reason)
        .await
    {
        tracing::warn!(%project, %app, instance, %err, "restart asked by a health check stopped");
    }
}
