//! Schemathesis (PyPI, installed by `.ci/run`) against the real server: it reads
//! `/openapi.json`, generates requests for every operation (valid and invalid ones, and chains of
//! them) and checks that no answer is a 5xx and that every answer matches the schema the document
//! gives its status.
//!
//! Left out of the run: the event streams (they stay open by design; `tests/api_events.rs` and
//! the front-door tests cover them) and the dispatch claims (a long poll that waits up to the
//! `waitMs` it is sent; `tests/api_dispatch.rs` covers them).
//!
//! Without schemathesis it is skipped with a message, unless `CI` is set: CI must run it.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::TestApp;

/// The version `.ci/run` installs.
const PINNED: &str = "4.32.5";

/// Operations left out (see the module doc), as one regular expression over paths.
const EXCLUDED: &str = r"(/stream|^/events$|/dispatch/claim)";

/// The `st` command: on the PATH, or in the scripts directory of `python3`.
fn schemathesis() -> Option<PathBuf> {
    let runs = |p: &PathBuf| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = PathBuf::from("st");
    if runs(&on_path) {
        return Some(on_path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let scripts = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let st = scripts.join("st");
    runs(&st).then_some(st)
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let Some(st) = schemathesis() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "schemathesis is not installed, and CI must run this test: \
                 pip install schemathesis=={PINNED} (as .ci/run does)"
            );
        }
        eprintln!(
            "SKIPPED: schemathesis is not installed (pip install schemathesis=={PINNED}); \
             in CI this test runs"
        );
        return;
    };
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .client_key("schema-key")
        // Thousands of writes in a minute: the write limit would answer most of them 429.
        .env("WRITE_RATE_LIMIT_MAX", "1000000")
        // A front-door call for an agent that never answers gives up soon.
        .env("CHAT_REPLY_TIMEOUT_MS", "3000")
        // /token/generate answers 503 (a 5xx) by design when agentd has no Agora project: give
        // it one (made-up credentials of the right form), so that the route itself is tested.
        .env("AGORA_APP_ID", "0123456789abcdef0123456789abcdef")
        .env("AGORA_APP_CERTIFICATE", "fedcba9876543210fedcba9876543210")
        .start();
    let mut cmd = Command::new(&st);
    cmd.arg("run")
        .arg(s.url("/openapi.json"))
        .args(["--header", "Authorization: Bearer schema-key"])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--exclude-path-regex", EXCLUDED])
        // About a minute on two cores: 10 cases per operation in each phase, no shrinking.
        .args(["--max-examples", "10", "--no-shrink"])
        // One worker: CPython 3.11's ast module is not thread-safe, and hypothesis parses
        // sources while describing strategies.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        // Its cache goes to the working directory: the server's temp dir, not the repository.
        .current_dir(s.root())
        .env("NO_COLOR", "1");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("schemathesis ran for more than 10 minutes")
    .expect("the schemathesis task")
    .expect("schemathesis could not run");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{text}\n--- agentd's output ---\n{}",
        out.status,
        s.output()
    );
    // It really tested: the summary counts the operations and the cases that passed.
    assert!(text.contains("passed"), "{text}");
    assert!(!text.contains("Tested: 0"), "{text}");
}
