//! Who is calling: every RPC a scheduler serves starts here.

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::bearer;
use crate::cluster::ClusterSecret;
use crate::secret::TokenHash;
use crate::users::{User, Users};

/// The authenticated caller of an RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A user with a valid token.
    User(User),
    /// A holder of the cluster secret: an executor.
    Executor,
    /// Anyone, on a cluster started with `--insecure`.
    Anonymous,
}

/// Identifies callers from their bearer credential.
#[derive(Clone, Debug)]
pub struct Authenticator {
    secure: Option<Secure>,
}

#[derive(Clone, Debug)]
struct Secure {
    users: Users,
    cluster: ClusterSecret,
    executor_credential: TokenHash,
}

impl Authenticator {
    /// Users are who `users` says; executors prove `cluster`.
    pub fn new(users: Users, cluster: ClusterSecret) -> Self {
        let executor_credential = cluster.credential().hash();
        Self {
            secure: Some(Secure {
                users,
                cluster,
                executor_credential,
            }),
        }
    }

    /// Everyone is [`Caller::Anonymous`] (`--insecure`).
    pub fn insecure() -> Self {
        Self { secure: None }
    }

    /// Does this authenticator check anything?
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// The cluster secret, on a secure cluster.
    pub fn cluster(&self) -> Option<&ClusterSecret> {
        self.secure.as_ref().map(|s| &s.cluster)
    }

    /// An interceptor that refuses requests from nobody this authenticator
    /// knows, for services that check nothing else (the gRPC health
    /// service): they are open to any user or executor of the cluster, and
    /// to no one else.
    pub fn require_known(
        &self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone + use<> {
        let authenticator = std::sync::Arc::new(self.clone());
        move |request: tonic::Request<()>| {
            authenticator.identify(request.metadata())?;
            Ok(request)
        }
    }

    /// Who sent a request with this metadata: `Unauthenticated` without a
    /// credential or with one nobody holds.
    pub fn identify(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let Some(secure) = &self.secure else {
            return Ok(Caller::Anonymous);
        };
        let Some(presented) = bearer::presented(metadata) else {
            return Err(Status::unauthenticated(
                "no credentials: this Volley cluster requires a token \
                 (set VOLLEY_TOKEN or pass --token-file)",
            ));
        };
        if TokenHash::of(presented.as_bytes()) == secure.executor_credential {
            return Ok(Caller::Executor);
        }
        match secure.users.authenticate(presented) {
            Some(user) => Ok(Caller::User(user.clone())),
            None => Err(Status::unauthenticated(
                "the token is not valid for this Volley cluster",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Request;

    use super::*;
    use crate::bearer::BearerInterceptor;
    use crate::secret::Secret;
    use crate::users::Role;

    fn with(credential: Option<&Secret>) -> MetadataMap {
        let mut request = Request::new(());
        BearerInterceptor::new(credential)
            .unwrap()
            .attach(&mut request);
        request.metadata().clone()
    }

    #[test]
    fn users_executors_and_strangers_are_told_apart() {
        let (ana, token) = Users::create("ana".parse().unwrap(), Role::Submit).unwrap();
        let cluster = ClusterSecret::random().unwrap();
        let auth = Authenticator::new(Users::new(vec![ana.clone()]), cluster.clone());
        assert_eq!(
            auth.identify(&with(Some(&token))).ok(),
            Some(Caller::User(ana))
        );
        assert_eq!(
            auth.identify(&with(Some(&cluster.credential()))).ok(),
            Some(Caller::Executor)
        );
        let none = auth.identify(&with(None)).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let wrong = auth
            .identify(&with(Some(&Secret::new("guess"))))
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let other = ClusterSecret::random().unwrap().credential();
        assert!(auth.identify(&with(Some(&other))).is_err());
        assert_eq!(
            Authenticator::insecure().identify(&with(None)).ok(),
            Some(Caller::Anonymous)
        );
    }
}
