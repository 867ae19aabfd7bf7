//! The people a scheduler knows: a tokens file of `name role sha256:HEX`
//! lines, one per user, where HEX is the SHA-256 of the user's token.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::SecurityError;
use crate::secret::{Secret, TokenHash};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything: submit, and see or cancel every user's jobs.
    Admin,
    /// Submit jobs, and see, cancel and fetch the results of their own.
    Submit,
    /// Look only: the cluster's executors and their own (no) jobs. For
    /// monitoring.
    Read,
}

impl Role {
    /// May this role submit jobs?
    pub fn may_submit(self) -> bool {
        matches!(self, Self::Admin | Self::Submit)
    }

    /// May this role see and act on other users' jobs?
    pub fn sees_all_jobs(self) -> bool {
        self == Self::Admin
    }
}

impl FromStr for Role {
    type Err = SecurityError;

    fn from_str(text: &str) -> Result<Self, SecurityError> {
        match text {
            "admin" => Ok(Self::Admin),
            "submit" => Ok(Self::Submit),
            "read" => Ok(Self::Read),
            other => Err(SecurityError::Invalid(format!(
                "`{other}` is not a role (use admin, submit or read)"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admin => "admin",
            Self::Submit => "submit",
            Self::Read => "read",
        })
    }
}

/// A user's name: 1 to 64 of `A-Z a-z 0-9 . _ @ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = SecurityError;

    fn from_str(text: &str) -> Result<Self, SecurityError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if valid {
            Ok(Self(text.to_string()))
        } else {
            Err(SecurityError::Invalid(format!(
                "`{text}` is not a user name (1 to 64 letters, digits, `.`, `_`, `@`, `-`)"
            )))
        }
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One user: name, role, and the hash of their token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    name: UserName,
    role: Role,
    token: TokenHash,
}

impl User {
    /// A user whose token hashes to `token`.
    pub fn new(name: UserName, role: Role, token: TokenHash) -> Self {
        Self { name, role, token }
    }

    /// Their name.
    pub fn name(&self) -> &UserName {
        &self.name
    }

    /// Their role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The hash of their token, which tickets for their results bind.
    pub fn token_hash(&self) -> TokenHash {
        self.token
    }

    /// The line a users file holds for this user.
    pub fn to_line(&self) -> String {
        format!("{} {} sha256:{}", self.name, self.role, self.token.to_hex())
    }
}

/// Every user a scheduler knows.
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: Vec<User>,
}

impl Users {
    /// The users in `users`.
    pub fn new(users: Vec<User>) -> Self {
        Self { users }
    }

    /// Reads a users file: `name role sha256:HEX` per line; `#` comments
    /// and blank lines are skipped. A name may appear once.
    pub fn load(path: &Path) -> Result<Self, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| SecurityError::UsersFile {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users: Vec<User> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message: String| (i + 1, message);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = fields[..] else {
                return Err(fail("expected `name role sha256:HEX`".into()));
            };
            let name: UserName = name
                .parse()
                .map_err(|e: SecurityError| fail(e.to_string()))?;
            let role: Role = role
                .parse()
                .map_err(|e: SecurityError| fail(e.to_string()))?;
            let token = hash
                .strip_prefix("sha256:")
                .and_then(TokenHash::from_hex)
                .ok_or_else(|| fail("the token hash must be `sha256:` and 64 hex digits".into()))?;
            if users.iter().any(|u| u.name == name) {
                return Err(fail(format!("user `{name}` appears twice")));
            }
            users.push(User::new(name, role, token));
        }
        Ok(Self { users })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user whose token is `token`. Every entry is compared, in constant
    /// time, so how long this takes says nothing of which one matched.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        let presented = TokenHash::of(token.as_bytes());
        let mut found = None;
        for user in &self.users {
            if user.token == presented {
                found = Some(user);
            }
        }
        found
    }

    /// A new user with a fresh random token: the user (for the file) and
    /// the token (for them, shown once).
    pub fn create(name: UserName, role: Role) -> Result<(User, Secret), SecurityError> {
        let token = Secret::random()?;
        Ok((User::new(name, role, token.hash()), token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_file_authenticates_each_token_as_its_user_and_nobody_else() {
        let (ana, ana_token) = Users::create("ana".parse().unwrap(), Role::Admin).unwrap();
        let (bo, bo_token) = Users::create("bo".parse().unwrap(), Role::Read).unwrap();
        let text = format!("# team\n{}\n\n{}\n", ana.to_line(), bo.to_line());
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.authenticate(ana_token.expose()), Some(&ana));
        assert_eq!(
            users.authenticate(bo_token.expose()).map(User::role),
            Some(Role::Read)
        );
        assert_eq!(users.authenticate("not a token"), None);
        assert_eq!(users.authenticate(""), None);
    }

    #[test]
    fn a_malformed_users_file_names_the_line_and_what_is_wrong() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        for (text, expected) in [
            ("ana admin".to_string(), "expected"),
            (format!("ana boss {hash}"), "not a role"),
            (format!("a/b admin {hash}"), "not a user name"),
            ("ana admin sha256:zz".to_string(), "64 hex digits"),
            (format!("ana admin {hash}\nana read {hash}"), "twice"),
        ] {
            let (_, message) = Users::parse(&text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
