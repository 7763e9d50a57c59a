//! Who is on the other end of the socket (peer credentials → user and
//! groups) and what they may do (roles from `[access]` in sluiced.toml).

use std::ffi::CStr;

use sluice_shared::protocol::Role;

/// A caller, as the kernel vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Numeric user id.
    pub uid: u32,
    /// User name (or the uid as text when it has none).
    pub user: String,
    /// Names of the user's groups.
    pub groups: Vec<String>,
}

/// The user name and primary group of `uid`, from the user database.
pub(crate) fn user_name(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call and
    // its length is passed; the result pointer is checked before use.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some((
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            pwd.pw_gid,
        ))
    }
}

fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `user_name`.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || grp.gr_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(grp.gr_name).to_string_lossy().into_owned())
    }
}

fn group_ids(user: &str, primary: u32) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(user) else {
        return vec![primary];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(64)];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries; name is NUL-terminated.
        let rc =
            unsafe { libc::getgrouplist(name.as_ptr(), primary, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(usize::try_from(count).unwrap_or(0));
            return groups;
        }
        if count <= n || n > 65_536 {
            return vec![primary];
        }
        n = count;
    }
}

impl Caller {
    /// The caller with this uid, names looked up in the user database.
    pub fn from_uid(uid: u32, gid: u32) -> Self {
        match user_name(uid) {
            Some((user, primary)) => {
                let mut groups: Vec<String> = group_ids(&user, primary)
                    .into_iter()
                    .chain([gid])
                    .filter_map(group_name)
                    .collect();
                groups.sort();
                groups.dedup();
                Self { uid, user, groups }
            }
            None => Self {
                uid,
                user: uid.to_string(),
                groups: group_name(gid).into_iter().collect(),
            },
        }
    }
}

/// Role rules: the first role whose list matches wins (admin, operator, viewer).
#[derive(Clone, Debug, Default)]
pub struct Access {
    rules: Option<Vec<(Role, Vec<String>)>>,
    daemon_uid: u32,
}

/// Why `[access]` is not valid.
#[derive(Debug, thiserror::Error)]
#[error("[access] in sluiced.toml: {0}")]
pub struct AccessError(String);

impl Access {
    /// Rules from the `[access]` table; without one, the daemon's own user and
    /// root are admins and everyone else (who can open the socket) a viewer.
    pub fn from_config(table: Option<&toml::Table>) -> Result<Self, AccessError> {
        // SAFETY: geteuid has no preconditions.
        let daemon_uid = unsafe { libc::geteuid() };
        let Some(table) = table else {
            return Ok(Self {
                rules: None,
                daemon_uid,
            });
        };
        let mut rules = Vec::new();
        for (key, value) in table {
            let role = match key.as_str() {
                "admin" => Role::Admin,
                "operator" => Role::Operator,
                "viewer" => Role::Viewer,
                other => {
                    return Err(AccessError(format!(
                        "unknown role '{other}' (roles are admin, operator, viewer)"
                    )));
                }
            };
            let list = value
                .as_array()
                .ok_or_else(|| AccessError(format!("'{key}' must be a list of users and @groups")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| AccessError(format!("'{key}' must list strings")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.push((role, list));
        }
        rules.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
        Ok(Self {
            rules: Some(rules),
            daemon_uid,
        })
    }

    /// The role of `caller`, or `None` when no rule lets them in.
    pub fn role(&self, caller: &Caller) -> Option<Role> {
        let Some(rules) = &self.rules else {
            return Some(if caller.uid == self.daemon_uid || caller.uid == 0 {
                Role::Admin
            } else {
                Role::Viewer
            });
        };
        rules.iter().find_map(|(role, who)| {
            who.iter()
                .any(|w| {
                    w == "*"
                        || *w == caller.user
                        || w.strip_prefix('@')
                            .is_some_and(|g| caller.groups.iter().any(|cg| cg == g))
                        || w.strip_prefix("uid:")
                            .is_some_and(|u| u == caller.uid.to_string())
                })
                .then_some(*role)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, groups: &[&str]) -> Caller {
        Caller {
            uid: 4242,
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn first_matching_role_wins() {
        let table: toml::Table =
            "admin = [\"root\", \"@wheel\"]\noperator = [\"@ops\"]\nviewer = [\"*\"]"
                .parse()
                .unwrap();
        let a = Access::from_config(Some(&table)).unwrap();
        assert_eq!(a.role(&caller("root", &[])), Some(Role::Admin));
        assert_eq!(a.role(&caller("bob", &["ops", "wheel"])), Some(Role::Admin));
        assert_eq!(a.role(&caller("carol", &["ops"])), Some(Role::Operator));
        assert_eq!(a.role(&caller("dave", &[])), Some(Role::Viewer));
        let strict: toml::Table = "operator = [\"carol\"]".parse().unwrap();
        assert_eq!(
            Access::from_config(Some(&strict))
                .unwrap()
                .role(&caller("dave", &[])),
            None
        );
        let bad: toml::Table = "owner = [\"x\"]".parse().unwrap();
        assert!(Access::from_config(Some(&bad)).is_err());
    }

    #[test]
    fn the_current_user_is_looked_up() {
        // SAFETY: no preconditions.
        let uid = unsafe { libc::geteuid() };
        let c = Caller::from_uid(uid, unsafe { libc::getegid() });
        assert!(!c.user.is_empty());
    }
}
