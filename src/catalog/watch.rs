//! Hot reload of the catalog: a notify callback forwards file events into a channel; an async
//! task debounces them, reloads, and publishes the new snapshot. A broken edit is logged and the
//! last good catalog stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::Catalog;

/// Quiet time after the last file event before reloading, so an editor's burst of writes
/// becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The current catalog, shared by every part of the server.
#[derive(Clone)]
pub struct CatalogHandle {
    rx: watch::Receiver<Arc<Catalog>>,
}

impl CatalogHandle {
    /// A handle that never changes (for tools and tests that do not watch files).
    pub fn fixed(catalog: Catalog) -> CatalogHandle {
        let (tx, rx) = watch::channel(Arc::new(catalog));
        // Keep the sender alive for the life of the process so receivers never see a close.
        std::mem::forget(tx);
        CatalogHandle { rx }
    }

    /// The catalog in force now.
    pub fn current(&self) -> Arc<Catalog> {
        self.rx.borrow().clone()
    }

    /// A receiver that is told about every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.rx.clone()
    }
}

/// Keeps the file watcher alive; dropping it stops hot reload.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
}

/// Loads the catalog once (an error here stops start-up) and starts watching its files.
/// Must be called inside a tokio runtime.
pub fn start(
    property_json: &Path,
    graphs_dir: &Path,
) -> Result<(CatalogHandle, WatchGuard), super::CatalogError> {
    let initial = Catalog::load(property_json, graphs_dir)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<()>();

    let prop_name = property_json.file_name().map(|n| n.to_os_string());
    let graphs_abs = graphs_dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            p.starts_with(&graphs_abs) || p.file_name().map(|n| n.to_os_string()) == prop_name
        });
        if relevant {
            let _ = ev_tx.send(());
        }
    })
    .map_err(|e| watch_error(property_json, e))?;

    // Watch the directory holding property.json (editors often replace the file by rename).
    let prop_dir = property_json
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    if prop_dir.is_dir() {
        watcher
            .watch(&prop_dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(&prop_dir, e))?;
    }
    if graphs_dir.is_dir() {
        watcher
            .watch(graphs_dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(graphs_dir, e))?;
    }

    tokio::spawn(reload_loop(
        ev_rx,
        tx,
        property_json.to_path_buf(),
        graphs_dir.to_path_buf(),
    ));
    Ok((CatalogHandle { rx }, WatchGuard { _watcher: watcher }))
}

fn watch_error(path: &Path, e: notify::Error) -> super::CatalogError {
    super::CatalogError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot watch for changes: {e}"),
    }
}

async fn reload_loop(
    mut events: mpsc::UnboundedReceiver<()>,
    tx: watch::Sender<Arc<Catalog>>,
    property_json: PathBuf,
    graphs_dir: PathBuf,
) {
    while events.recv().await.is_some() {
        // Debounce: wait until the files have been quiet for DEBOUNCE.
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let (p, g) = (property_json.clone(), graphs_dir.clone());
        match tokio::task::spawn_blocking(move || Catalog::load(&p, &g)).await {
            Ok(Ok(cat)) => {
                tracing::info!(graphs = cat.graphs().len(), "graph catalog reloaded");
                tx.send_replace(Arc::new(cat));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "graph catalog not reloaded; keeping the last good one");
            }
            Err(e) => tracing::error!(error = %e, "graph catalog reload task failed"),
        }
    }
}
