//! Who a `/sql` request logs in as: the HBA rule (an HTTP client is `host`, or `hostssl`
//! over https, with its peer address) or `auth_type` decides whether a password is needed;
//! the connection string's cleartext password is checked against the stored secret
//! (auth_file or auth_query), SCRAM secrets included. Unknown users cost the same work as
//! known ones and get the same answer.

use super::json::PgError;
use super::Peer;
use crate::app::App;
use crate::auth::{self, HbaMethod, HbaRequest, ScramSecret, Secret};
use crate::client::access::{find_secret, Denied};
use crate::config::AuthType;

/// A request that may go on.
pub struct Admitted {
    /// The user's stored secret, if any.
    pub secret: Option<Secret>,
    /// The SCRAM ClientKey of the password (SCRAM pass-through), for SCRAM secrets.
    pub client_key: Option<[u8; 32]>,
}

/// Iterations of the stand-in derivation for unknown users (the usual SCRAM count).
const STAND_IN_ITERATIONS: u32 = 4096;

/// Checks `user`'s `password` for `database`; the error is the driver's error JSON.
pub async fn admit(
    app: &App,
    peer: Peer,
    user: &str,
    database: &str,
    password: &str,
) -> Result<Admitted, PgError> {
    let refused = |d: Denied| PgError::of(d.kind(), d.to_string());
    let settings_type = app.config().settings.auth_type;
    let needs_password = match settings_type {
        AuthType::Hba => match hba_method(app, peer, user, database) {
            HbaMethod::Trust => false,
            HbaMethod::Md5 | HbaMethod::Password | HbaMethod::ScramSha256 => true,
            HbaMethod::Reject | HbaMethod::Cert | HbaMethod::Peer => {
                return Err(refused(Denied::Rejected {
                    user: user.to_owned(),
                    database: database.to_owned(),
                }))
            }
        },
        AuthType::Trust | AuthType::Any => false,
        AuthType::Cert => return Err(refused(Denied::Certificate(user.to_owned()))),
        _ => true,
    };
    let known = find_secret(app, database, user).await.map_err(refused)?;
    let secret = known.secret;
    if !needs_password {
        if secret.is_none() && known.listed {
            return Err(refused(Denied::Password(user.to_owned())));
        }
        return Ok(Admitted {
            secret,
            client_key: None,
        });
    }
    if !peer.may_send_cleartext(app) {
        return Err(refused(Denied::Plaintext));
    }
    // An unknown user costs what a known one of a kind drawn from the configured mix of
    // secrets costs (as the TCP login's challenge does), so timing does not tell them apart.
    let stand_in_scram = secret.is_none()
        && auth::choose_method_masked("md5", None, user, &app.scram_mock_key, app.users().mix())
            == auth::ClientAuthMethod::ScramSha256;
    let (stored, name, pw) = (secret.clone(), user.to_owned(), password.to_owned());
    let key = app.scram_mock_key;
    let check = move || verify(stored.as_ref(), &name, &pw, &key, stand_in_scram);
    let verified = tokio::task::spawn_blocking(check).await.unwrap_or(None);
    match verified {
        Some(client_key) => Ok(Admitted { secret, client_key }),
        None => Err(refused(Denied::Password(user.to_owned()))),
    }
}

/// `Some(client key when SCRAM)` when `password` matches `secret`. An unknown user costs
/// one SCRAM derivation against a stand-in salt (`stand_in_scram`) or one md5 check.
fn verify(
    secret: Option<&Secret>,
    user: &str,
    password: &str,
    mock_key: &[u8],
    stand_in_scram: bool,
) -> Option<Option<[u8; 32]>> {
    let pw = password.as_bytes();
    match secret {
        Some(Secret::Scram(s)) => auth::scram_client_key_of(s, pw).map(Some),
        Some(other) => auth::verify_cleartext(other, user, pw).then_some(None),
        None if stand_in_scram => {
            let _ = ScramSecret::from_password(pw, mock_key, STAND_IN_ITERATIONS);
            None
        }
        None => {
            let stand_in = Secret::Md5(auth::md5_secret(user, mock_key));
            let _ = auth::verify_cleartext(&stand_in, user, pw);
            None
        }
    }
}

fn hba_method(app: &App, peer: Peer, user: &str, database: &str) -> HbaMethod {
    let Some(hba) = app.hba() else {
        return HbaMethod::Reject;
    };
    hba.lookup(&HbaRequest {
        database,
        user,
        addr: Some(peer.addr.ip().to_canonical()),
        tls: peer.tls,
        replication: false,
    })
}
