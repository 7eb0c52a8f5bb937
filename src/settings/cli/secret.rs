//! Secrets on the command line: a value that never shows in `Debug` or `--help`, and the
//! pair of flags (`--token` / `--token-file`) that give one.

use std::marker::PhantomData;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{value_parser, Arg, ArgMatches, Command, FromArgMatches};

use crate::error::Error;
use crate::settings::read_secret_file;

/// A secret given on the command line or in the environment. Its `Debug` form is
/// `<redacted>`; [`Secret::expose`] is the only way to its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Names the flags and variables of one kind of secret, for [`SecretArgs`].
pub trait SecretName: Clone + std::fmt::Debug + Default + Send + Sync + 'static {
    /// The flag holding the secret itself (`token`: `--token`).
    const FLAG: &'static str;
    /// Its environment variable.
    const ENV: &'static str;
    /// The flag naming a file that holds the secret (`token-file`).
    const FILE_FLAG: &'static str;
    /// Its environment variable.
    const FILE_ENV: &'static str;
    /// The value's name in `--help`.
    const VALUE_NAME: &'static str;
    /// `--help` for the flag holding the secret.
    const HELP: &'static str;
    /// `--help` for the file flag.
    const FILE_HELP: &'static str;
}

/// The API's bearer token: `--token` (`WRANGLE_TOKEN`), `--token-file`
/// (`WRANGLE_TOKEN_FILE`).
#[derive(Clone, Debug, Default)]
pub struct Token;

impl SecretName for Token {
    const FLAG: &'static str = "token";
    const ENV: &'static str = "WRANGLE_TOKEN";
    const FILE_FLAG: &'static str = "token-file";
    const FILE_ENV: &'static str = "WRANGLE_TOKEN_FILE";
    const VALUE_NAME: &'static str = "TOKEN";
    const HELP: &'static str = "The API's bearer token (the coordinator's has every scope and \
        is required on every route but /healthz, /login and the dashboard's page; never \
        empty). Shows in `ps`: prefer --token-file or the environment";
    const FILE_HELP: &'static str =
        "Read the token from this file (its trailing newline dropped, at most 4 KiB)";
}

/// The cluster's shared secret: `--cookie` (`WRANGLE_COOKIE`), `--cookie-file`
/// (`WRANGLE_COOKIE_FILE`).
#[derive(Clone, Debug, Default)]
pub struct Cookie;

impl SecretName for Cookie {
    const FLAG: &'static str = "cookie";
    const ENV: &'static str = "WRANGLE_COOKIE";
    const FILE_FLAG: &'static str = "cookie-file";
    const FILE_ENV: &'static str = "WRANGLE_COOKIE_FILE";
    const VALUE_NAME: &'static str = "SECRET";
    const HELP: &'static str = "The secret nodes present to join (the cluster's cookie). Shows \
        in `ps`: prefer --cookie-file or the environment";
    const FILE_HELP: &'static str =
        "Read the cookie from this file (its trailing newline dropped, at most 4 KiB)";
}

/// One secret, given as itself or as a file holding it, on the command line or in the
/// environment. Written with clap's builder rather than derived, because which one wins
/// depends on where each came from (which a derived struct forgets): the command line
/// before the environment, and a file before a value from the same place.
#[derive(Clone, Debug, Default)]
pub struct SecretArgs<K> {
    value: Option<(Secret, ValueSource)>,
    file: Option<(PathBuf, ValueSource)>,
    kind: PhantomData<K>,
}

impl<K: SecretName> SecretArgs<K> {
    /// The secret, read from its file if that wins; `None` when neither was given. The
    /// value is returned as given, even empty: the checks that follow decide.
    pub fn resolve(&self) -> Result<Option<String>, Error> {
        use ValueSource::CommandLine;
        let (path, source) = match (&self.value, &self.file) {
            (None, None) => return Ok(None),
            (Some((_, CommandLine)), Some((_, CommandLine))) => {
                return Err(Error::invalid(
                    K::FLAG,
                    format!("give --{} or --{}, not both", K::FLAG, K::FILE_FLAG),
                ))
            }
            (Some((value, CommandLine)), _) | (Some((value, _)), None) => {
                return Ok(Some(value.expose().to_string()))
            }
            (_, Some((path, source))) => (path, *source),
        };
        let field = match source {
            CommandLine => K::FILE_FLAG,
            _ => K::FILE_ENV,
        };
        read_secret_file(field, path).map(Some)
    }
}

impl<K: SecretName> FromArgMatches for SecretArgs<K> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let source = |id| matches.value_source(id).unwrap_or(ValueSource::CommandLine);
        if let Some(value) = matches.get_one::<Secret>(K::FLAG) {
            self.value = Some((value.clone(), source(K::FLAG)));
        }
        if let Some(path) = matches.get_one::<PathBuf>(K::FILE_FLAG) {
            self.file = Some((path.clone(), source(K::FILE_FLAG)));
        }
        Ok(())
    }
}

impl<K: SecretName> clap::Args for SecretArgs<K> {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new(K::FLAG)
                .long(K::FLAG)
                .env(K::ENV)
                // `--help` must not print the secret found in the environment.
                .hide_env_values(true)
                .value_name(K::VALUE_NAME)
                .value_parser(value_parser!(Secret))
                .help(K::HELP),
        )
        .arg(
            Arg::new(K::FILE_FLAG)
                .long(K::FILE_FLAG)
                .env(K::FILE_ENV)
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .help(K::FILE_HELP),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        value: Option<ValueSource>,
        file: Option<(&std::path::Path, ValueSource)>,
    ) -> SecretArgs<Cookie> {
        SecretArgs {
            value: value.map(|s| (Secret::from("from-value".to_string()), s)),
            file: file.map(|(p, s)| (p.to_path_buf(), s)),
            kind: PhantomData,
        }
    }

    #[test]
    fn the_command_line_wins_then_a_file() {
        use ValueSource::{CommandLine as Flag, EnvVariable as Env};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        std::fs::write(&path, "from-file\n").unwrap();
        let got = |v, f| args(v, f).resolve().map_err(|e| e.to_string());
        assert_eq!(got(None, None), Ok(None));
        assert_eq!(got(Some(Env), None).unwrap().unwrap(), "from-value");
        assert_eq!(got(None, Some((&path, Env))).unwrap().unwrap(), "from-file");
        assert_eq!(
            got(Some(Flag), Some((&path, Env))).unwrap().unwrap(),
            "from-value"
        );
        assert_eq!(
            got(Some(Env), Some((&path, Flag))).unwrap().unwrap(),
            "from-file"
        );
        assert_eq!(
            got(Some(Env), Some((&path, Env))).unwrap().unwrap(),
            "from-file"
        );
        assert!(got(Some(Flag), Some((&path, Flag)))
            .unwrap_err()
            .contains("not both"));
        // A file that cannot be read is named as it was given.
        let missing = dir.path().join("missing");
        assert!(got(None, Some((&missing, Env)))
            .unwrap_err()
            .contains("WRANGLE_COOKIE_FILE"));
        assert!(got(None, Some((&missing, Flag)))
            .unwrap_err()
            .contains("cookie-file"));
        assert_eq!(
            format!("{:?}", args(Some(Flag), None))
                .matches("<redacted>")
                .count(),
            1
        );
    }
}
