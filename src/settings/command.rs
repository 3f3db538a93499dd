//! Command lines in settings and graph files (`WORKER_COMMAND`, `runtime.command`).

/// Splits a command line into words: spaces separate, double quotes group, no shell expansion.
pub fn split_command(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    (!words.is_empty()).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_splitting() {
        assert_eq!(
            split_command(r#"python3 "my worker.py" -v"#).unwrap(),
            vec!["python3", "my worker.py", "-v"]
        );
        assert!(split_command("   ").is_none());
    }
}
