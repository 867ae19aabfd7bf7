//! Signed tickets: the scheduler's grant to fetch one piece of shuffle or
//! result data, bound to the credential of the one reader it was issued
//! to, with an expiry. Executors verify them with the same derived key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use ring::hmac;
use volley_proto::v1;

use crate::cluster::ClusterSecret;
use crate::secret::TokenHash;

/// Why an executor refused a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a signed ticket at all.
    #[error("the ticket is not signed by the scheduler")]
    Unsigned,
    /// The signature does not match: altered, or signed by another cluster.
    #[error("the ticket's signature is not this cluster's")]
    Forged,
    /// Past its expiry.
    #[error("the ticket expired")]
    Expired,
    /// Issued to another reader than the one presenting it.
    #[error("the ticket was issued to another reader")]
    OtherReader,
}

/// Signs and verifies tickets with a key derived from the cluster secret.
#[derive(Clone)]
pub struct TicketSigner {
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketSigner(ttl {:?})", self.ttl)
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TicketSigner {
    /// A signer for `secret`'s cluster whose tickets live `ttl`.
    pub fn new(secret: &ClusterSecret, ttl: Duration) -> Self {
        Self {
            key: secret.ticket_key(),
            ttl,
        }
    }

    /// A ticket for `piece`, for the reader whose credential hashes to
    /// `reader`, valid from `now` for the signer's lifetime.
    pub fn sign(&self, piece: &v1::ShuffleTicket, reader: &TokenHash, now: SystemTime) -> Vec<u8> {
        let claims = v1::TicketClaims {
            piece: Some(piece.clone()),
            reader: reader.as_bytes().to_vec(),
            expires_unix_secs: unix_secs(now + self.ttl),
        }
        .encode_to_vec();
        let mac = hmac::sign(&self.key, &claims).as_ref().to_vec();
        v1::SignedTicket { claims, mac }.encode_to_vec()
    }

    /// The piece `ticket` grants, if it is signed by this cluster, not
    /// expired at `now`, and issued to the reader whose credential hashes to
    /// `reader`.
    pub fn verify(
        &self,
        ticket: &[u8],
        reader: &TokenHash,
        now: SystemTime,
    ) -> Result<v1::ShuffleTicket, TicketError> {
        let signed = v1::SignedTicket::decode(ticket).map_err(|_| TicketError::Unsigned)?;
        if signed.mac.is_empty() {
            return Err(TicketError::Unsigned);
        }
        hmac::verify(&self.key, &signed.claims, &signed.mac).map_err(|_| TicketError::Forged)?;
        let claims =
            v1::TicketClaims::decode(signed.claims.as_slice()).map_err(|_| TicketError::Forged)?;
        if unix_secs(now) >= claims.expires_unix_secs {
            return Err(TicketError::Expired);
        }
        if TokenHash::from_bytes(&claims.reader).as_ref() != Some(reader) {
            return Err(TicketError::OtherReader);
        }
        claims.piece.ok_or(TicketError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn piece(job: &str) -> v1::ShuffleTicket {
        v1::ShuffleTicket {
            job_id: job.into(),
            stage_id: 2,
            map_partition: 3,
            output_partition: 1,
            attempt: Some(v1::OutputAttempt {
                epoch: 1,
                stage_attempt: 2,
            }),
        }
    }

    #[test]
    fn a_ticket_is_honoured_only_untouched_in_time_and_for_its_reader() {
        let secret = ClusterSecret::random().unwrap();
        let signer = TicketSigner::new(&secret, Duration::from_secs(60));
        let reader = Secret::random().unwrap().hash();
        let now = SystemTime::now();
        let ticket = signer.sign(&piece("job1"), &reader, now);
        assert_eq!(signer.verify(&ticket, &reader, now), Ok(piece("job1")));

        let later = now + Duration::from_secs(61);
        assert_eq!(
            signer.verify(&ticket, &reader, later),
            Err(TicketError::Expired)
        );
        let stranger = Secret::random().unwrap().hash();
        assert_eq!(
            signer.verify(&ticket, &stranger, now),
            Err(TicketError::OtherReader)
        );

        // Another job's id put into the claims breaks the signature.
        let mut signed = v1::SignedTicket::decode(ticket.as_slice()).unwrap();
        let mut claims = v1::TicketClaims::decode(signed.claims.as_slice()).unwrap();
        claims.piece = Some(piece("job2"));
        signed.claims = claims.encode_to_vec();
        assert_eq!(
            signer.verify(&signed.encode_to_vec(), &reader, now),
            Err(TicketError::Forged)
        );

        let other_cluster =
            TicketSigner::new(&ClusterSecret::random().unwrap(), Duration::from_secs(60));
        let foreign = other_cluster.sign(&piece("job1"), &reader, now);
        assert_eq!(
            signer.verify(&foreign, &reader, now),
            Err(TicketError::Forged)
        );
        let unsigned = piece("job1").encode_to_vec();
        assert!(signer.verify(&unsigned, &reader, now).is_err());
    }
}
