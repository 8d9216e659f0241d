//! The "Examples:" block at the end of every command's `--help` (and so of its man page): one
//! table, applied to the clap definition in [`apply`], so that commands whose modules define
//! no examples of their own (or that other work keeps changing) get them all the same, and a
//! test can tell that none is missing.

use clap::Command;

/// `(command path, example lines)`; the path is the words after `keyport` ("" is `keyport`
/// itself). Lines are `command   # why`, indented as clap indents options.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "  keyport serve &                        # first start: data dir, host key, your admin user
  ssh -p 2222 localhost                  # a session with your secrets injected
  keyport secret create gh --env GH_TOKEN < token.txt
  keyport doctor                         # what works and what does not, one line each",
    ),
    (
        "serve",
        "  keyport serve                          # 127.0.0.1:2222 (SSH) and 127.0.0.1:7070 (API)
  keyport serve --ssh-listen 0.0.0.0:2222 --data-dir /srv/keyport
  KEYPORT_LOG=debug keyport serve        # keyport's own logs at debug",
    ),
    (
        "user",
        "  keyport user add alice --os-user alice --login-key \"$(cat alice.pub)\"
  keyport user list
  keyport user remove bob -y",
    ),
    (
        "user add",
        "  keyport user add alice --os-user alice --login-key \"$(cat alice.pub)\"
  keyport user add bob --admin --key-type ecdsa-p256 --login-key-file bob_keys
  keyport user add carol --data-dir /tmp/kp      # another data dir",
    ),
    (
        "user list",
        "  keyport user list                      # NAME ADMIN OS USER LOGIN KEYS KEY CREATED
  keyport user list -o json",
    ),
    (
        "user remove",
        "  keyport user remove bob                # asks first on a terminal
  keyport user remove bob -y             # with their secrets, keys and tokens",
    ),
    (
        "login-key",
        "  keyport login-key add --user alice \"$(cat alice.pub)\"
  keyport login-key list --user alice
  keyport login-key remove --user alice SHA256:…",
    ),
    (
        "login-key add",
        "  keyport login-key add --user alice \"$(cat alice.pub)\"
  keyport login-key add --user alice --file ~alice/.ssh/authorized_keys",
    ),
    (
        "login-key list",
        "  keyport login-key list --user alice
  keyport login-key list --user alice -o json",
    ),
    (
        "login-key remove",
        "  keyport login-key remove --user alice SHA256:…   # as `login-key list` shows it
  keyport login-key remove --user alice \"$(cat old.pub)\"",
    ),
    (
        "login",
        "  keyport login --url http://gateway:7070 < token.txt   # the token stays out of argv
  keyport login --url http://127.0.0.1:7070      # asks for the token on a terminal",
    ),
    (
        "whoami",
        "  keyport whoami                         # user, admin or not, the API in use
  keyport whoami -o json",
    ),
    (
        "web-login",
        "  keyport web-login                      # a link that signs a browser in, once, within 2m
  xdg-open \"$(keyport web-login)\"        # open it right away",
    ),
    (
        "secret",
        "  keyport secret create gh --env GH_TOKEN < token.txt
  keyport secret list
  keyport secret update gh --value ghp_yyy
  keyport secret delete gh -y",
    ),
    (
        "secret create",
        "  printf '%s' \"$GH_TOKEN\" | keyport secret create gh --env GH_TOKEN
  keyport secret create npmrc --file ~/.npmrc < npmrc            # delivered as a file
  keyport secret create cert --file ~/.cert.der --description TLS < cert.der
  keyport secret create gh --kind token --env GH_TOKEN < t.txt   # due for rotation after 90d
  keyport secret create gh --source vault://secret/team/gh#token --env GH_TOKEN   # from Vault
  keyport secret create db --source vault-dyn://database/creds/ro#password --env PGPASSWORD --required",
    ),
    (
        "secret update",
        "  keyport secret update gh --value ghp_yyy        # the next session sees it
  keyport secret update gh --env \"\"                  # \"\" clears; the last one: stored, disabled
  keyport secret update npmrc --file ~/.config/npmrc
  keyport secret update db --kind password --rotate-after 30d --no-mask",
    ),
    (
        "secret list",
        "  keyport secret list                    # NAME KIND ENV FILE ENABLED AGE DELIVERED DESCRIPTION
  keyport secret list --stale            # only those due for rotation
  keyport secret list --kind token -o json
  keyport secret list -o json > s.json   # add values, and `secret import s.json` restores them",
    ),
    (
        "secret delete",
        "  keyport secret delete npmrc            # asks on a terminal; scripts need no -y
  keyport secret delete npmrc -y         # ~/.npmrc goes at the next session",
    ),
    (
        "secret check",
        "  keyport secret check                   # required secrets you lack, files not written; exit 1",
    ),
    (
        "secret test",
        "  keyport secret test gh                 # ok: gh from vault://…: 40 bytes (12 ms)
  keyport secret test db -o json         # the lease's TTL too; a test lease is revoked at once",
    ),
    (
        "secret import",
        "  keyport secret import .env             # NAME=VALUE lines: all created, or none
  keyport secret import secrets.json
  cat .env | keyport secret import - --format dotenv",
    ),
    (
        "key",
        "  keyport key show                       # your public key, for GitHub
  keyport key regenerate --type ecdsa-p256 -y",
    ),
    (
        "key show",
        "  keyport key show                       # key line and '# SHA256:… (ed25519)'
  keyport key show | ssh host 'cat >> ~/.ssh/authorized_keys'   # usable as it is
  keyport key show --user alice          # another user, from the data dir (admins)",
    ),
    (
        "key regenerate",
        "  keyport key regenerate                 # asks first on a terminal
  keyport key regenerate --type ecdsa-p256 -y",
    ),
    (
        "token",
        "  keyport token create laptop            # printed once
  keyport token list
  keyport token revoke laptop",
    ),
    (
        "token create",
        "  keyport token create laptop            # then on the laptop: keyport login --url URL
  keyport token create first --user alice        # a new user's first token (data dir)",
    ),
    (
        "token list",
        "  keyport token list
  keyport token list -o json",
    ),
    ("token revoke", "  keyport token revoke laptop"),
    (
        "audit",
        "  keyport audit --since 1h
  keyport audit --since 2026-01-01T00:00:00Z --user alice -o json   # admins: anyone's",
    ),
    (
        "gitssh",
        "  GIT_SSH_COMMAND='keyport gitssh' git clone git@github.com:org/repo.git   # a session sets it, with the full path
  keyport gitssh -T git@github.com       # which account GitHub sees for your keyport key",
    ),
    (
        "workspace",
        "  keyport workspace add dev1 --address dev1.internal:22 --os-user dev --owner alice --scan
  keyport workspace grant dev1 bob --os-user bob
  keyport workspace list
  ssh -p 2222 alice:dev1@gateway          # a session on dev1, with alice's secrets",
    ),
    (
        "workspace add",
        "  keyport workspace add dev1 --address dev1.internal:22 --os-user dev --owner alice \\
      --host-key \"$(cat dev1_ssh_host_ed25519_key.pub)\"
  keyport workspace add dev2 --address 10.0.0.7:22 --os-user dev --owner bob --scan
  keyport workspace add dev3 --address 10.0.0.8:22 --os-user dev --owner bob --scan \\
      --auth ca                        # trusts keyport's user CA: no authorized_keys",
    ),
    (
        "workspace set",
        "  keyport workspace set dev1 --auth ca   # certificates from now on; prints the sshd snippet
  keyport workspace set dev1 --auth key  # back to each user's key in authorized_keys",
    ),
    (
        "workspace list",
        "  keyport workspace list                 # over the API when logged in, else the data dir
  keyport workspace list -o json",
    ),
    (
        "workspace show",
        "  keyport workspace show dev1
  keyport workspace show dev1 -o json",
    ),
    (
        "workspace pin",
        "  keyport workspace pin dev1 --scan      # after dev1's sshd got a new host key
  keyport workspace pin dev1 --host-key \"$(cat new_host_key.pub)\"",
    ),
    (
        "workspace remove",
        "  keyport workspace remove dev1 -y       # with its host keys and grants",
    ),
    (
        "workspace grant",
        "  keyport workspace grant dev1 bob               # bob logs in there as the workspace's login
  keyport workspace grant dev1 bob --os-user bob # as his own login there
  keyport workspace grant dev1 carol --owner",
    ),
    ("workspace revoke", "  keyport workspace revoke dev1 bob"),
    (
        "ca",
        "  keyport ca show > keyport_user_ca.pub  # the TrustedUserCAKeys line(s) for workspaces
  keyport ca rotate                      # then put both lines on every workspace
  keyport ca promote                     # the new CA signs; the old one is the fallback
  keyport ca status                      # until no workspace is left on the old CA
  keyport ca retire",
    ),
    (
        "ca init",
        "  keyport ca init                        # ed25519
  keyport ca init --type ecdsa-p256      # for FIPS hosts that refuse ed25519",
    ),
    (
        "ca show",
        "  keyport ca show
  keyport ca show | ssh root@dev1 'cat > /etc/ssh/keyport_user_ca.pub'",
    ),
    (
        "ca rotate",
        "  keyport ca rotate                      # then install both lines everywhere",
    ),
    (
        "ca promote",
        "  keyport ca promote                     # the new CA signs; the old one is the fallback",
    ),
    (
        "ca status",
        "  keyport ca status                      # which workspaces still accept only the old CA
  keyport ca status -o json",
    ),
    (
        "ca retire",
        "  keyport ca retire -y                   # drop the previous CA
  keyport ca retire ca3                  # abandon a rotation: drop the next CA",
    ),
    (
        "admin",
        "  keyport admin rotate-master-key
  keyport admin jwt-key > keyport-jwt.pem
  keyport admin migrate",
    ),
    (
        "admin nodes",
        "  KEYPORT_DATABASE=postgres://keyport:PASSWORD@db:5432/keyport keyport admin nodes",
    ),
    (
        "admin migrate",
        "  keyport admin migrate                  # the data dir's SQLite file
  KEYPORT_DATABASE=postgres://keyport:PASSWORD@db:5432/keyport keyport admin migrate",
    ),
    (
        "admin jwt-key",
        "  keyport admin jwt-key                  # the PEM for Vault's jwt_validation_pubkeys
  bao write auth/jwt/config jwt_validation_pubkeys=@keyport-jwt.pem",
    ),
    (
        "admin rotate-master-key",
        "  keyport admin rotate-master-key        # a new <data dir>/master.key
  KEYPORT_MASTER_KEY=$OLD KEYPORT_NEW_MASTER_KEY=$NEW keyport admin rotate-master-key",
    ),
    ("config", "  keyport config print-default > ~/.config/keyport/keyport.toml"),
    (
        "config print-default",
        "  keyport config print-default           # every setting, commented
  keyport config print-default > /etc/keyport/keyport.toml",
    ),
    (
        "doctor",
        "  keyport doctor                         # exit 0 when every check passes
  keyport doctor --data-dir /var/lib/keyport",
    ),
    (
        "completions",
        "  source <(keyport completions bash)     # this shell
  keyport completions bash > /etc/bash_completion.d/keyport
  keyport completions zsh > \"${fpath[1]}/_keyport\"
  keyport completions fish > ~/.config/fish/completions/keyport.fish",
    ),
    (
        "man",
        "  keyport man | man -l -
  keyport man > /usr/local/share/man/man1/keyport.1
  keyport man --dir /usr/local/share/man/man1    # keyport-secret-create.1 and the rest",
    ),
];

/// The example lines for a command path, if the table has them.
pub fn for_path(path: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// Every path the table has examples for.
pub fn paths() -> impl Iterator<Item = &'static str> {
    EXAMPLES.iter().map(|(p, _)| *p)
}

/// Adds each command's examples as its `after_help`.
pub fn apply(cmd: Command) -> Command {
    apply_at(cmd, "")
}

fn apply_at(cmd: Command, path: &str) -> Command {
    let cmd = match for_path(path) {
        Some(lines) => cmd.after_help(format!("Examples:\n{lines}")),
        None => cmd,
    };
    cmd.mut_subcommands(|sub| {
        let sub_path = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        apply_at(sub, &sub_path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command's path under `cmd` (clap's `help` excluded).
    fn visible(cmd: &Command, path: &str, out: &mut Vec<String>) {
        out.push(path.to_string());
        let shown = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help");
        for sub in shown {
            let sub_path = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            visible(sub, &sub_path, out);
        }
    }

    #[test]
    fn every_command_has_examples_and_every_example_a_command() {
        let mut cmd = crate::cli::command();
        cmd.build();
        let mut commands = Vec::new();
        visible(&cmd, "", &mut commands);
        // A new subcommand needs a line in EXAMPLES.
        for path in &commands {
            assert!(for_path(path).is_some(), "`keyport {path}` has no examples");
        }
        // And a renamed or removed one must not leave examples behind.
        for path in paths() {
            assert!(
                commands.iter().any(|c| c == path),
                "examples for `keyport {path}`, which does not exist"
            );
        }
    }

    #[test]
    fn examples_name_their_own_command() {
        for (path, lines) in EXAMPLES {
            let own = format!("keyport {path}");
            assert!(
                lines.contains(own.trim_end()),
                "examples of `{own}` do not show it"
            );
        }
    }
}
