//! The core settings as flags with environment variables, built from [`super::table`] (clap's
//! builder API behind the `Args` trait, so `#[command(flatten)]` takes them as a derived struct).

use std::collections::BTreeMap;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::table::{CONFIG, CORE, Setting};

/// The settings given as flags or environment variables. Kept as text so that a bad value is
/// reported by [`super::Settings::resolve`] under its environment name, whatever its source.
#[derive(Default, Clone)]
pub struct SettingArgs {
    /// The TOML file (`--config`, `OUTBOX_CONFIG`).
    pub config: Option<String>,
    /// The core settings given, by environment variable.
    pub values: BTreeMap<&'static str, String>,
}

impl SettingArgs {
    /// The same arguments with `setting` given as `value`, as if by its flag.
    pub fn with(mut self, setting: &Setting, value: impl Into<String>) -> SettingArgs {
        if setting.env == CONFIG.env {
            self.config = Some(value.into());
        } else {
            self.values.insert(setting.env, value.into());
        }
        self
    }
}

/// `--flag <NAME>` with its environment variable, on every subcommand.
fn flag(setting: &Setting) -> Arg {
    Arg::new(setting.flag)
        .long(setting.flag)
        .value_name(setting.name())
        .action(ArgAction::Set)
        .env(setting.env)
        .hide_env_values(setting.secret)
        .global(true)
        .help(setting.help_line())
}

/// The value of `setting`'s flag (or its environment variable), if given.
fn given(matches: &ArgMatches, setting: &Setting) -> Result<Option<String>, clap::Error> {
    matches
        .try_get_one::<String>(setting.flag)
        .map(Option::<&String>::cloned)
        .map_err(|e| clap::Error::raw(ErrorKind::InvalidValue, format!("{}: {e}", setting.flag)))
}

impl Args for SettingArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(flag(&CONFIG)).args(CORE.iter().map(flag))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = SettingArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(path) = given(matches, &CONFIG)? {
            self.config = Some(path);
        }
        for setting in CORE {
            if let Some(value) = given(matches, setting)? {
                self.values.insert(setting.env, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::SettingArgs;
    use crate::settings::table::{BATCH_SIZE, SINK};

    fn parse(argv: &[&str]) -> SettingArgs {
        let command = SettingArgs::augment_args(Command::new("outbox-relay").no_binary_name(true));
        let matches = command.try_get_matches_from(argv).expect("valid arguments");
        SettingArgs::from_arg_matches(&matches).expect("settings")
    }

    #[test]
    fn flags_are_kept_as_text_by_their_variable() {
        let args = parse(&["--batch-size", "many", "--config", "relay.toml"]);
        assert_eq!(args.config.as_deref(), Some("relay.toml"));
        assert_eq!(
            args.values.get(BATCH_SIZE.env).map(String::as_str),
            Some("many")
        );
        assert_eq!(
            args.values.get(SINK.env),
            None,
            "a setting not given is absent"
        );
    }
}
