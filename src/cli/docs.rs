//! `quorate completions SHELL` and `quorate man`: shell completion scripts (clap_complete) and
//! manual pages (clap_mangen), both generated from the one clap definition in [`super::Cli`],
//! so they can never disagree with the flags the binary takes.
//!
//! Nothing here talks to an agent; both commands only print or write files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

pub(crate) const COMPLETIONS_ABOUT: &str = "Print a shell completion script for quorate.

The script completes subcommands, flags and the values of enumerated flags. Load it for the
current shell, or install it where the shell looks for completions:

  bash:  quorate completions bash > /etc/bash_completion.d/quorate
         (or: source <(quorate completions bash) in ~/.bashrc)
  zsh:   quorate completions zsh > \"${fpath[1]}/_quorate\"
  fish:  quorate completions fish > ~/.config/fish/completions/quorate.fish";

pub(crate) const MAN_ABOUT: &str = "Print the quorate(1) manual page, or write all of them.

Without --out, the page of the quorate command itself is printed as roff to stdout
(view it with: quorate man | man -l -). With --out DIR, one page per command is written there,
quorate.1 and quorate-<command>.1 (e.g. quorate-agent.1), ready for /usr/share/man/man1.";

/// The shells completions are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `quorate completions` flags.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// `quorate man` flags.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write one page per command into this directory (created if missing) instead of
    /// printing quorate(1).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

/// The completion script for `shell`.
pub(crate) fn completions_script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "quorate",
        &mut out,
    );
    out
}

/// The roff source of quorate(1).
pub(crate) fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

/// Writes quorate.1 and one page per command into `dir`; returns the files written.
pub(crate) fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("quorate") && n.ends_with(".1"))
        })
        .collect();
    written.sort();
    Ok(written)
}

/// `quorate completions SHELL`.
pub(crate) fn completions(args: &CompletionsArgs) -> ExitCode {
    let script = completions_script(args.shell);
    if std::io::stdout().lock().write_all(&script).is_err() {
        return ExitCode::SUCCESS; // stdout closed early (`| head`): nothing more to say
    }
    ExitCode::SUCCESS
}

/// `quorate man [--out DIR]`.
pub(crate) fn man(args: &ManArgs) -> ExitCode {
    match &args.out {
        None => match man_page() {
            Ok(page) => {
                let _ = std::io::stdout().lock().write_all(&page);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not render the manual page: {e}");
                ExitCode::FAILURE
            }
        },
        Some(dir) => match write_man_pages(dir) {
            Ok(files) => {
                for f in files {
                    say!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: could not write the manual pages to {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("utf-8")
    }

    #[test]
    fn every_script_completes_every_visible_command() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        assert!(names.contains(&"agent".to_string()) && names.len() > 10);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = text(completions_script(shell));
            for name in &names {
                assert!(
                    script.contains(name.as_str()),
                    "{shell:?} completions lack {name}"
                );
            }
            assert!(
                script.contains("data-dir"),
                "{shell:?} completions lack agent flags"
            );
        }
    }

    #[test]
    fn the_man_page_documents_the_commands() {
        let page = text(man_page().expect("render"));
        assert!(page.contains(".TH quorate 1"), "{page}");
        assert!(page.contains("discover") && page.contains("agent"));
    }

    #[test]
    fn man_pages_are_written_one_per_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_man_pages(dir.path()).expect("write");
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"quorate.1".to_string()), "{names:?}");
        assert!(names.contains(&"quorate-agent.1".to_string()), "{names:?}");
        assert!(
            names.contains(&"quorate-token-create.1".to_string()),
            "{names:?}"
        );
        let agent = std::fs::read_to_string(dir.path().join("quorate-agent.1")).expect("read");
        assert!(agent.contains("data\\-dir"), "agent page lacks --data-dir");
    }
}
