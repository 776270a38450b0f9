//! Unit tests for the SCRAM client state machine, including end-to-end runs against
//! [`crate::auth::ScramServer`].

use super::*;
use crate::auth::{ScramServer, SCRAM_SHA_256};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// Cheap verifier (2 iterations) so debug-build tests stay fast.
fn cheap_secret(password: &[u8]) -> ScramSecret {
    ScramSecret::from_password(password, b"0123456789abcdef", 2)
}

/// Runs `client` against `server`; returns the server's outcome or the first error.
fn run(
    client: &mut ScramClient,
    server: &mut ScramServer,
) -> Result<crate::auth::ScramOutcome, ScramError> {
    let server_first = server.client_first(SCRAM_SHA_256, &client.client_first())?;
    let client_final = client.server_first(&server_first)?;
    let outcome = server.client_final(&client_final)?;
    client.server_final(&outcome.server_final)?;
    Ok(outcome)
}

fn rfc_client_after_first() -> ScramClient {
    let mut client = ScramClient::with_password(b"pencil");
    let first = client.client_first_with("user", "rOprNGfwEbeRWgbNEkqO".to_owned());
    assert_eq!(first, RFC_CLIENT_FIRST);
    client
}

#[test]
fn rfc7677_client_messages_match_the_rfc() {
    let mut client = rfc_client_after_first();
    let client_final = client.server_first(RFC_SERVER_FIRST).expect("valid");
    assert_eq!(client_final, RFC_CLIENT_FINAL);
    assert_eq!(client.server_final(RFC_SERVER_FINAL), Ok(()));
}

#[test]
fn client_first_has_empty_user_and_random_nonce() {
    let mut client = ScramClient::with_password(b"pw");
    let a = client.client_first();
    let b = client.client_first();
    assert!(a.starts_with(b"n,,n=,r=") && a.len() == 8 + 24);
    assert_ne!(a, b);
}

#[test]
fn password_client_authenticates_against_server() {
    let secret = cheap_secret(b"correct horse");
    let mut client = ScramClient::with_password(b"correct horse");
    let outcome = run(&mut client, &mut ScramServer::new(secret.clone())).expect("succeeds");
    assert_eq!(sha256(&outcome.client_key), secret.stored_key);
}

#[test]
fn password_client_with_wrong_password_fails_at_server() {
    let mut client = ScramClient::with_password(b"wrong");
    let mut server = ScramServer::new(cheap_secret(b"right"));
    assert_eq!(run(&mut client, &mut server), Err(ScramError::InvalidProof));
}

#[test]
fn client_key_pass_through_logs_in_with_recovered_key() {
    // The application authenticates to pgfunnel with postgres_protocol's client...
    let secret = cheap_secret(b"app password");
    let mut front = ScramServer::new(secret.clone());
    let mut app = ScramSha256::new(b"app password", ChannelBinding::unsupported());
    let first = front
        .client_first(SCRAM_SHA_256, app.message())
        .expect("valid");
    app.update(&first).expect("valid server-first");
    let outcome = front.client_final(app.message()).expect("valid proof");
    // ...and pgfunnel logs in to a server holding the same verifier without the password.
    let mut client = ScramClient::with_client_key(outcome.client_key, &secret);
    run(&mut client, &mut ScramServer::new(secret)).expect("pass-through succeeds");
}

#[test]
fn client_key_pass_through_refuses_different_salt_or_iterations() {
    let secret = cheap_secret(b"pw");
    let client_key = hmac_sha256(
        &salted_password(b"pw", &secret.salt, secret.iterations),
        &[b"Client Key"],
    );
    let other_salt = ScramSecret::from_password(b"pw", b"another salt", 2);
    let other_iterations = ScramSecret::from_password(b"pw", &secret.salt, 3);
    for server_secret in [other_salt, other_iterations] {
        let mut client = ScramClient::with_client_key(client_key, &secret);
        let mut server = ScramServer::new(server_secret);
        assert_eq!(
            run(&mut client, &mut server),
            Err(ScramError::SecretMismatch)
        );
    }
}

#[test]
fn iteration_counts_outside_bounds_are_refused() {
    for (count, expected) in [
        ("0", 0u64),
        ("1000001", 1_000_001),
        ("99999999999999999999999", u64::MAX),
    ] {
        let mut client = rfc_client_after_first();
        let message = format!("r=rOprNGfwEbeRWgbNEkqOxyz,s=c2FsdA==,i={count}");
        assert_eq!(
            client.server_first(message.as_bytes()),
            Err(ScramError::IterationCount {
                iterations: expected,
                max: MAX_CLIENT_ITERATIONS
            })
        );
    }
}

#[test]
fn server_first_rejects_bad_nonce_salt_and_trailing_data() {
    let cases: [(&[u8], ScramError); 7] = [
        (
            b"r=rOprNGfwEbeRWgbNEkqO,s=c2FsdA==,i=1",
            ScramError::NonceMismatch,
        ),
        (
            b"r=somethingElse123,s=c2FsdA==,i=1",
            ScramError::NonceMismatch,
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=1",
            ScramError::Malformed { what: "salt" },
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOx,s=,i=1",
            ScramError::Malformed { what: "salt" },
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=-1",
            ScramError::Malformed {
                what: "iteration count",
            },
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=1,x=y",
            ScramError::Malformed {
                what: "data after iteration count",
            },
        ),
        (
            b"m=x,r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=1",
            ScramError::ExtensionNotSupported,
        ),
    ];
    for (message, expected) in cases {
        let mut client = rfc_client_after_first();
        assert_eq!(client.server_first(message), Err(expected));
    }
}

#[test]
fn server_final_checks_signature_and_reports_server_errors() {
    let mut client = rfc_client_after_first();
    client.server_first(RFC_SERVER_FIRST).expect("valid");
    let forged = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(
        client.server_final(forged),
        Err(ScramError::InvalidServerSignature)
    );

    let mut client = rfc_client_after_first();
    client.server_first(RFC_SERVER_FIRST).expect("valid");
    assert_eq!(
        client.server_final(b"e=invalid-proof\x01"),
        Err(ScramError::ServerError {
            code: "invalid-proof?".into()
        })
    );

    let mut client = rfc_client_after_first();
    client.server_first(RFC_SERVER_FIRST).expect("valid");
    let trailing = [RFC_SERVER_FINAL, b",x=1"].concat();
    assert!(matches!(
        client.server_final(&trailing),
        Err(ScramError::Malformed { .. })
    ));
}

#[test]
fn steps_out_of_order_are_rejected() {
    let mut client = ScramClient::with_password(b"pw");
    assert!(matches!(
        client.server_first(RFC_SERVER_FIRST),
        Err(ScramError::OutOfOrder { .. })
    ));
    assert!(matches!(
        client.server_final(RFC_SERVER_FINAL),
        Err(ScramError::OutOfOrder { .. })
    ));
}

#[test]
fn debug_output_redacts_credentials() {
    let shown = format!("{:?}", ScramClient::with_password(b"hunter2"));
    assert!(
        !shown.contains("hunter2") && !shown.contains("104"),
        "{shown}"
    );
}

#[test]
fn client_never_panics_on_hostile_server_messages() {
    let mut rng = StdRng::seed_from_u64(0xc11e_0001);
    let base: &[u8] = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpW,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2";
    for round in 0..3000 {
        let mut input = base.to_vec();
        match round % 3 {
            0 => input.truncate(rng.gen_range(0..base.len())),
            1 => {
                let at = rng.gen_range(0..input.len());
                input[at] = rng.gen();
            }
            _ => input = (0..rng.gen_range(0..120)).map(|_| rng.gen()).collect(),
        }
        let mut client = rfc_client_after_first();
        if client.server_first(&input).is_ok() {
            let garbage: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.gen()).collect();
            assert!(client.server_final(&garbage).is_err());
        }
    }
}
