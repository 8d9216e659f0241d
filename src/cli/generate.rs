//! `keyport completions SHELL` and `keyport man`: shell completion scripts and man pages, made
//! from the same clap definition as `--help` ([`super::command`]), so they cannot drift from it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use clap_complete::Shell;

/// `keyport completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `keyport man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write keyport.1 and one page per subcommand (keyport-secret-create.1, …) into DIR
    /// instead of printing keyport.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "keyport", &mut out);
    out.flush()?;
    Ok(())
}

/// Prints keyport(1), or writes every page into `--dir`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let Some(dir) = args.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(super::command()).render(&mut out)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("man --dir {}: {e}", dir.display()))?;
    // Built first: that is what names a subcommand's page `keyport-secret-create`.
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &dir, &mut written)?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes `cmd`'s page and its visible subcommands' pages, depth first.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    let path = dir.join(man.get_filename());
    let mut file =
        std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.write_all(&roff)?;
    // 0644 after the fact: keyport's umask (077) masks any mode given at creation, and man
    // pages in /usr/local/share/man are read by every user of the host.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
