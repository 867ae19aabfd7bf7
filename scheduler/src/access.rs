//! Who may see and act on a job, and the tickets its data is fetched with.
//! A job belongs to the user who submitted it: only they (and admins) see
//! it, follow it, cancel it or release it; only they fetch its results, with
//! tickets bound to their token; executors fetch its shuffle data with
//! tickets bound to the cluster's credential.

use std::time::SystemTime;

use tonic::Status;
use volley_dataflow::JobId;
use volley_proto::v1;
use volley_security::{Caller, TicketSigner, TokenHash, UserName};

use crate::config::SchedulerSecurity;

/// A job's owner and how its tickets are signed.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobAccess {
    /// `None`: submitted anonymously to an insecure cluster.
    owner: Option<Owner>,
    /// `None` on an insecure cluster: tickets go unsigned.
    signing: Option<Signing>,
}

#[derive(Clone, Debug)]
struct Owner {
    name: UserName,
    /// The hash of the owner's token, which result tickets bind.
    reader: TokenHash,
}

#[derive(Clone, Debug)]
struct Signing {
    signer: TicketSigner,
    /// The hash of the executors' credential, which shuffle tickets bind.
    cluster: TokenHash,
}

impl JobAccess {
    /// The access of a job `caller` submits; refused unless they may submit.
    pub(crate) fn for_submitter(
        caller: &Caller,
        security: &SchedulerSecurity,
    ) -> Result<Self, Status> {
        let owner = match caller {
            Caller::Anonymous => None,
            Caller::User(user) if user.role().may_submit() => Some(Owner {
                name: user.name().clone(),
                reader: user.token_hash(),
            }),
            Caller::User(user) => {
                return Err(Status::permission_denied(format!(
                    "user `{}` has the role `{}`, which may not submit jobs",
                    user.name(),
                    user.role()
                )));
            }
            Caller::Executor => {
                return Err(Status::permission_denied("executors do not submit jobs"));
            }
        };
        let signing = security.authenticator.cluster().map(|cluster| Signing {
            signer: TicketSigner::new(cluster, security.ticket_ttl),
            cluster: cluster.credential().hash(),
        });
        Ok(Self { owner, signing })
    }

    /// The access of a job kept by the state store: its owner's name and
    /// token hash as stored (`None` for an anonymous job), signed as this
    /// scheduler signs.
    pub(crate) fn restored(
        owner: Option<(UserName, TokenHash)>,
        security: &SchedulerSecurity,
    ) -> Self {
        Self {
            owner: owner.map(|(name, reader)| Owner { name, reader }),
            signing: security.authenticator.cluster().map(|cluster| Signing {
                signer: TicketSigner::new(cluster, security.ticket_ttl),
                cluster: cluster.credential().hash(),
            }),
        }
    }

    /// The owner's name and token hash, to store.
    pub(crate) fn stored_owner(&self) -> (String, Vec<u8>) {
        match &self.owner {
            Some(owner) => (owner.name.to_string(), owner.reader.as_bytes().to_vec()),
            None => (String::new(), Vec::new()),
        }
    }

    /// The owner's name, if the job has one.
    pub(crate) fn owner(&self) -> Option<&UserName> {
        self.owner.as_ref().map(|o| &o.name)
    }

    /// Is `caller` the one who submitted the job?
    pub(crate) fn is_owner(&self, caller: &Caller) -> bool {
        match (caller, &self.owner) {
            (Caller::Anonymous, None) => true,
            (Caller::User(user), Some(owner)) => *user.name() == owner.name,
            _ => false,
        }
    }

    /// May `caller` see the job at all?
    pub(crate) fn visible_to(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::User(user) => user.role().sees_all_jobs() || self.is_owner(caller),
            Caller::Executor => false,
        }
    }

    /// Refuses `caller` unless they may see and act on job `id`.
    pub(crate) fn check(&self, caller: &Caller, id: &JobId) -> Result<(), Status> {
        if self.visible_to(caller) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "job {id} belongs to another user"
            )))
        }
    }

    /// The ticket the job's owner fetches result piece `ticket` with.
    pub(crate) fn owner_grant(&self, ticket: &v1::ShuffleTicket) -> Vec<u8> {
        match (&self.signing, &self.owner) {
            (Some(signing), Some(owner)) => {
                signing
                    .signer
                    .sign(ticket, &owner.reader, SystemTime::now())
            }
            _ => Vec::new(),
        }
    }

    /// The ticket executors fetch shuffle piece `ticket` with.
    pub(crate) fn cluster_grant(&self, ticket: &v1::ShuffleTicket) -> Vec<u8> {
        match &self.signing {
            Some(signing) => signing
                .signer
                .sign(ticket, &signing.cluster, SystemTime::now()),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use volley_security::{ClusterSecret, PathPolicy, Role, Users};

    use super::*;

    fn secure() -> SchedulerSecurity {
        SchedulerSecurity {
            authenticator: volley_security::Authenticator::new(
                Users::default(),
                ClusterSecret::random().unwrap(),
            ),
            paths: PathPolicy::deny_all(),
            ..SchedulerSecurity::insecure_unrestricted()
        }
    }

    fn user(name: &str, role: Role) -> Caller {
        let (user, _) = Users::create(name.parse().unwrap(), role).unwrap();
        Caller::User(user)
    }

    #[test]
    fn a_job_is_seen_by_its_owner_and_admins_only() {
        let security = secure();
        let ana = user("ana", Role::Submit);
        let access = JobAccess::for_submitter(&ana, &security).unwrap();
        let id = JobId::from("job1");
        assert!(access.check(&ana, &id).is_ok());
        assert!(access.check(&user("root", Role::Admin), &id).is_ok());
        let denied = access.check(&user("bo", Role::Submit), &id).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(access.check(&Caller::Executor, &id).is_err());
        assert!(!access.owner_grant(&v1::ShuffleTicket::default()).is_empty());
    }

    #[test]
    fn readers_and_executors_may_not_submit() {
        let security = secure();
        for caller in [user("eve", Role::Read), Caller::Executor] {
            let denied = JobAccess::for_submitter(&caller, &security).unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        }
    }
}
