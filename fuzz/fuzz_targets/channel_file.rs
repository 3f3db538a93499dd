//! Channel names to log file names: always a plain file inside the log directory, with only safe
//! characters, and two different names (split at the first NUL byte) never share a file.
#![no_main]

use std::path::Path;

use agentd::supervisor::logs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/srv/logs");
    let mut names = s.splitn(2, '\0');
    let a = names.next().unwrap_or_default();
    let path = logs::log_file(dir, a);
    assert_eq!(path.parent(), Some(dir));
    let stem = logs::safe_stem(a);
    assert!(!stem.starts_with('.') && !stem.contains(".."));
    assert!(stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    let _ = agentd::supervisor::check_channel(a);
    if let Some(b) = names.next() {
        if a != b {
            assert_ne!(path, logs::log_file(dir, b));
        }
    }
});
