//! OS accounts: looking up the Unix user a keyport user's sessions run as.

use nix::unistd::{Uid, User};

/// An OS account from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// Why an OS account could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OsUserError {
    /// No account has this name.
    #[error("no OS account named '{0}'")]
    NoSuchUser(String),
    /// The password database could not be read.
    #[error("cannot read the password database: {0}")]
    Lookup(#[from] nix::Error),
}

impl From<User> for OsUser {
    fn from(u: User) -> Self {
        Self {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir.to_string_lossy().into_owned(),
            shell: u.shell.to_string_lossy().into_owned(),
        }
    }
}

/// Looks up the account named `name`.
pub fn lookup(name: &str) -> Result<OsUser, OsUserError> {
    User::from_name(name)?
        .map(OsUser::from)
        .ok_or_else(|| OsUserError::NoSuchUser(name.to_string()))
}

/// The account this process runs as.
pub fn current() -> Result<OsUser, OsUserError> {
    let uid = Uid::effective();
    User::from_uid(uid)?
        .map(OsUser::from)
        .ok_or_else(|| OsUserError::NoSuchUser(format!("uid {uid}")))
}

/// Whether this process runs as root (and so runs sessions as each user's OS account).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The names of the groups `user` is in (its primary group and the supplementary ones), for
/// requirements scoped to groups. Unknown accounts and unreadable databases give none.
pub fn group_names(user: &OsUser) -> Vec<String> {
    let Ok(name) = std::ffi::CString::new(user.name.as_str()) else {
        return Vec::new();
    };
    let gids = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
        .unwrap_or_else(|_| vec![nix::unistd::Gid::from_raw(user.gid)]);
    gids.into_iter()
        .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
        .map(|g| g.name)
        .collect()
}
