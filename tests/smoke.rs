//! Boot checks: the server starts on port 0, and bad settings stop it with a clear message.

mod support;

use support::TestApp;

#[tokio::test]
async fn starts_and_answers_health() {
    let server = TestApp::builder().bundled().start();
    let r = server.health().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["code"], "0");
}

#[test]
fn bad_setting_names_the_variable() {
    let out = match TestApp::builder().env("WORKERS_MAX", "lots").try_start() {
        Ok(_) => panic!("started with WORKERS_MAX=lots"),
        Err(out) => out,
    };
    assert!(out.contains("WORKERS_MAX"), "{out}");
    assert!(out.contains("whole number"), "{out}");
}

#[test]
fn non_loopback_without_key_is_refused() {
    let out = match TestApp::builder().env("SERVER_HOST", "0.0.0.0").try_start() {
        Ok(_) => panic!("listened on 0.0.0.0 without a key"),
        Err(out) => out,
    };
    assert!(
        out.contains("SERVER_HOST") && out.contains("AGENTD_API_KEY"),
        "{out}"
    );
}
