//! Any bytes as the TOML settings file (`OUTBOX_CONFIG`): read, or refused by `OUTBOX_CONFIG`
//! naming the file; what it holds is then assembled or refused naming a setting. Never a panic.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use outbox_relay::adopt::Adoption;
use outbox_relay::config::{SettingArgs, Settings, sink_keys};
use outbox_relay::settings::table::CONFIG;

fn file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outbox-relay-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("relay.toml")
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(&path, data).expect("write");
    let args = SettingArgs::default().with(&CONFIG, path.display().to_string());
    match Settings::resolve(&args, &sink_keys()) {
        Err(err) => {
            assert!(
                err.setting == CONFIG.env || err.setting == "OUTBOX_SINKS",
                "{err}"
            );
            assert!(
                err.problem.contains("relay.toml"),
                "the file is named: {err}"
            );
        }
        Ok(settings) => {
            let checks = [
                settings.relay().map(drop),
                settings.sinks().map(drop),
                settings.log_format().map(drop),
                Adoption::read(&settings).map(drop),
            ];
            for err in checks.into_iter().filter_map(Result::err) {
                assert!(err.setting.starts_with("OUTBOX_"), "{err}");
                assert!(err.to_string().contains(&err.setting), "{err}");
            }
        }
    }
});
