//! Removing partial uploads nobody will finish.

use std::sync::Arc;
use std::time::Duration;

use crate::server::Shared;

/// Removes partial uploads nobody finished: a file in `DIR/uploads/` untouched for longer than
/// a login token lives (`--token-ttl`; the client that started it cannot go on without logging
/// in again, and its upload token would be all that is left of it), unless a `perform` is
/// writing it. Runs for the server's life, looking every half lifetime (at most every 5 min).
pub async fn remove_abandoned(shared: Arc<Shared>) {
    let lifetime = Duration::from_secs(shared.config.token_ttl.max(1));
    let every = (lifetime / 2).clamp(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        tokio::time::sleep(every).await;
        let dir = shared.store.uploads_dir().to_owned();
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let token = name.replacen('_', "/", 2);
            if shared.upload_writers.entries().contains_key(&token) {
                continue;
            }
            let idle = entry
                .metadata()
                .await
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|modified| modified.elapsed().ok());
            if idle.is_some_and(|idle| idle > lifetime) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => log::info!("removed the abandoned partial upload {name}"),
                    Err(err) => log::warn!("removing the abandoned upload {name}: {err}"),
                }
            }
        }
    }
}
