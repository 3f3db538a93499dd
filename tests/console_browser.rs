//! The console in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/console.mjs`, which lists the steps) against a real agentd, with the API key
//! on and without one. Each run leaves a screenshot in `target/test-artifacts/`.
//!
//! Needs `chromium` (Debian's package) and the script's node modules; `.ci/run` installs both.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{repo_root, TestApp};

const KEY: &str = "console-test-key";
/// The whole browser run, generous for a loaded machine (it takes about 15 s alone).
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Where the browser runs leave their screenshots.
fn artifacts() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-artifacts")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Panics with the command that installs whatever the browser run lacks.
fn check_prerequisites(script_dir: &Path) {
    let browser = chromium();
    assert!(
        Path::new(&browser).exists(),
        "Chromium is not installed at {browser}. Install it with:\n    \
         apt-get update && apt-get install -y chromium"
    );
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node,
        "Node.js is not installed. Install it with:\n    apt-get update && apt-get install -y nodejs npm"
    );
    assert!(
        script_dir
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "The browser test's node modules are not installed. Install them with:\n    \
         npm ci --prefix {}",
        script_dir.display()
    );
}

/// Runs the browser script against `app`; panics with its output (and the server's) on failure.
async fn drive(app: &TestApp, key: Option<&str>, tag: &str) {
    let dir = repo_root().join("tests").join("browser");
    check_prerequisites(&dir);
    let out_dir = artifacts();
    std::fs::create_dir_all(&out_dir).expect("cannot create target/test-artifacts");
    let shot = out_dir.join(format!("console-{tag}.png"));
    let _ = std::fs::remove_file(&shot);

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("console.mjs")
        .current_dir(&dir)
        .env("AGENTD_URL", &app.base_url)
        .env("CHROMIUM", chromium())
        .env("SCREENSHOT", &shot)
        .env("ARTIFACTS", &out_dir)
        .env("TAG", tag)
        .env_remove("AGENTD_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(k) = key {
        cmd.env("AGENTD_KEY", k);
    }
    let run = cmd.output();
    let out = match tokio::time::timeout(RUN_LIMIT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run node: {e}"),
        Err(_) => panic!(
            "the browser run took longer than {RUN_LIMIT:?}\nserver output:\n{}",
            app.output()
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser run failed ({}):\n{stdout}\n{stderr}\nserver output:\n{}",
        out.status,
        app.output()
    );
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}

#[tokio::test]
async fn the_console_runs_agents_in_chromium_with_the_key_on() {
    let app = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("AGENTD_API_KEY", KEY)
        .start();
    drive(&app, Some(KEY), "key").await;
}

#[tokio::test]
async fn the_console_runs_agents_in_chromium_without_a_key() {
    let app = TestApp::builder().bundled().fast_dispatch().start();
    drive(&app, None, "open").await;
}
