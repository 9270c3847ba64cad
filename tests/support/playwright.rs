//! Running a bug bundle's `repro.spec.ts` with the Playwright harness in `tests/playwright`
//! (installed by `scripts/install-deps.sh`; Debian's Chromium, never a downloaded browser).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A script run is a failure past this.
const PLAYWRIGHT_LIMIT: Duration = Duration::from_secs(180);

fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/playwright")
}

/// Runs `spec` with the harness's Playwright and config, `masked_text` standing in for what was
/// typed into masked fields; returns (success, output).
pub async fn run(spec: &str, masked_text: &str) -> (bool, String) {
    let harness = harness();
    assert!(
        harness.join("node_modules/@playwright/test").is_dir(),
        "the Playwright harness is not installed: run scripts/install-deps.sh"
    );
    let runs = harness.join("runs");
    std::fs::create_dir_all(&runs).expect("runs dir");
    // Below the harness, so that `@playwright/test` resolves from its node_modules.
    let dir = tempfile::Builder::new()
        .prefix("bundle-")
        .tempdir_in(&runs)
        .expect("temp dir");
    std::fs::write(dir.path().join("repro.spec.ts"), spec).expect("write spec");
    let mut command = tokio::process::Command::new("npx");
    command
        .args(["--no-install", "playwright", "test", "--config"])
        .arg(harness.join("playwright.config.ts"))
        .current_dir(&harness)
        .env("COBROWSE_SPEC_DIR", dir.path())
        .env("COBROWSE_MASKED_TEXT", masked_text)
        .env("COBROWSE_CHROMIUM", super::chromium())
        .env("CI", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(PLAYWRIGHT_LIMIT, command.output())
        .await
        .expect("Playwright finishes in time")
        .expect("npx runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The files of a zip, by name.
pub fn unzip(zip: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).expect("entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("entry reads");
            (f.name().to_string(), data)
        })
        .collect()
}
