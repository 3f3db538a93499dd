//! Full disk and broken storage (issue 10, item 5) against the real server: `DATA_DIR` on a small
//! tmpfs that fills up, a database file deleted under a running agentd, and a read-only data
//! directory at start-up. Writes are refused with 507/503 in each family's envelope, reads keep
//! working, nothing acknowledged is lost, and agentd recovers by itself once space frees.
//!
//! The tmpfs drills need to mount (root); they skip, saying so, where that is not allowed.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{assert_error, pid_alive, ten_code, wait_for, TestApp, SOON};

/// A tmpfs of its own, unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (such as `8m`); `None` when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts it read-only (nothing on it may be open for writing).
    fn read_only(&self) -> bool {
        Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn skip(test: &str) {
    eprintln!(
        "SKIPPED {test}: cannot mount a tmpfs here (needs root: mount -t tmpfs); \
         the drill did not run"
    );
}

/// Fills the filesystem of `dir` with a file `name` until it has no space left; the file.
fn fill(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last bytes, down to a single one.
    while f.write_all(&[0u8]).is_ok() {}
    let _ = f.sync_all();
    path
}

fn storage_builder(fs: &Tmpfs) -> support::Builder {
    TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("DATA_DIR", fs.path().join("data").to_string_lossy())
        .env("LOG_PATH", fs.path().join("logs").to_string_lossy())
}

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m["id"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_507_keeps_reads_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return skip("a_full_disk_refuses_writes_with_507_keeps_reads_and_recovers_by_itself");
    };
    let s = storage_builder(&fs).start();
    // A worker whose log is on the same filesystem.
    let worker = s.start_ok("logger", "echo", json!({"timeout": -1})).await;
    let chat = s.new_chat("echo").await;
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(
            s.post_user(&chat, &format!("before the disk filled {i}"))
                .await,
        );
    }

    let filler = fill(fs.path(), "filler");
    let big = "x".repeat(16 * 1024);
    let mut refused = None;
    for i in 0..2000 {
        let r = s
            .post_message(&chat, support::user_message(&format!("{i} {big}")))
            .await;
        match r.status {
            201 => acked.push(r.body["id"].as_str().unwrap().to_string()),
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let r = refused.expect("the disk never filled up");
    eprintln!(
        "{} writes acknowledged, then refused: {} {}",
        acked.len(),
        r.status,
        r.text
    );
    assert_error(&r, 507, "INSUFFICIENT_STORAGE");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("full") && msg.contains("nothing was written"),
        "{msg}"
    );

    // Every family says so in its own envelope.
    let r = s.start("full-2", "echo", json!({})).await;
    assert_eq!(ten_code(&r), (507, "507".to_string()), "{}", r.text);
    assert_eq!(r.body["msg"], "insufficient storage");

    let r = s
        .create_conversation(json!({"title": "t", "participants": ["u1"]}))
        .await;
    assert_error(&r, 507, "INSUFFICIENT_STORAGE");
    let r = s
        .create_agent_conversation("echo", json!({"title": "t"}))
        .await;
    assert_error(&r, 507, "INSUFFICIENT_STORAGE");

    // Reads keep working, with everything acknowledged; the server and the worker live on.
    assert_eq!(ids(&s.history(&chat).await).len(), acked.len());
    assert_eq!(s.get("/health").await.status, 200);
    assert_eq!(s.get("/api/v1/chats").await.status, 200);
    assert!(pid_alive(worker.pid), "the worker died of the full disk");
    assert!(pid_alive(s.pid()));
    // A channel whose chat exists already gets as far as the worker's file, on the same disk.
    s.stop_ok("logger").await;
    let filler_2 = fill(fs.path(), "filler-2");
    let r = s.start("logger", "echo", json!({"timeout": -1})).await;
    assert_eq!(ten_code(&r), (507, "507".to_string()), "{}", r.text);

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler_2).unwrap();
    let resumed = wait_for(SOON, || async {
        let r = s.post_message(&chat, support::user_message("after")).await;
        (r.status == 201).then(|| r.body["id"].as_str().unwrap().to_string())
    })
    .await;
    acked.push(resumed.expect("writes did not resume once space was freed"));
    for channel in ["full-2", "logger"] {
        let r = s.start(channel, "echo", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Nothing acknowledged is lost, even across a kill -9 and a restart.
    let remains = s.kill9();
    let s = storage_builder(&fs).after(remains).start();
    let kept = ids(&s.history(&chat).await);
    for id in &acked {
        assert!(kept.contains(id), "acknowledged message {id} was lost");
    }
    drop(s);
}

#[tokio::test]
async fn a_deleted_database_file_is_a_clear_503_not_a_crash() {
    let s = TestApp::with_fast_dispatch(&[]);
    let chat = s.new_chat("echo").await;
    let kept = s.post_user(&chat, "written before the file went").await;
    std::fs::remove_file(s.root().join("data/agentd.db")).unwrap();

    let refused = wait_for(SOON, || async {
        let r = s.post_message(&chat, support::user_message("lost?")).await;
        (r.status != 201).then_some(r)
    })
    .await
    .expect("writes went on into a deleted file");
    assert_error(&refused, 503, "STORAGE_UNAVAILABLE");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("deleted"));
    let r = s.start("after-delete", "echo", json!({})).await;
    assert_eq!(ten_code(&r), (503, "503".to_string()), "{}", r.text);
    // The worker started while its chat was being written is gone again, its channel free.
    assert!(s.worker("after-delete").await.is_none());
    assert!(s.spawned().is_empty(), "left behind: {:?}", s.spawned());
    let r = s
        .create_conversation(json!({"title": "t", "participants": ["u1"]}))
        .await;
    assert_error(&r, 503, "STORAGE_UNAVAILABLE");

    // Reads go on from what is open; the server stays up and says why in its log.
    assert!(ids(&s.messages(&chat).await).contains(&kept));
    assert_eq!(s.get("/health").await.status, 200);
    assert!(pid_alive(s.pid()));
    assert!(s
        .output()
        .contains("was deleted or replaced while agentd ran"));
}

#[tokio::test]
async fn a_read_only_data_dir_stops_the_start_with_a_clear_error() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return skip("a_read_only_data_dir_stops_the_start_with_a_clear_error");
    };
    {
        let mut s = storage_builder(&fs).start();
        s.new_chat("echo").await;
        assert!(s.terminate(Duration::from_secs(30)).is_some());
    }
    assert!(fs.read_only(), "cannot remount the tmpfs read-only");
    let out = match storage_builder(&fs).try_start() {
        Ok(_) => panic!("agentd started on a read-only data directory"),
        Err(out) => out,
    };
    assert!(out.contains("DATA_DIR"), "{out}");
    assert!(out.to_lowercase().contains("read-only"), "{out}");
    // It stopped once, with that message: no restart loop of its own.
    assert!(out.matches("DATA_DIR").count() <= 2, "{out}");
}
