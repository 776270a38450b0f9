//! What the relay reads of the bytes that pass: every message header (validated, counted,
//! tracked), the bodies the tracker asks for (query texts, Parse, Bind), and from the
//! server ReadyForQuery, ParameterStatus, ErrorResponse and CommandComplete.

use std::collections::HashMap;
use std::time::Instant;

use super::{LinkClock, Relay, RelayMode};
use crate::client::link_stats::LinkStats;
use crate::client::params::Reported;
use crate::client::tracker::Tracker;
use crate::client::validate::{ClientViolation, Validator};
use crate::protocol::messages::{parse_parameter_status, tag};
use crate::protocol::{Capture, FrameError, ScanEvent};

impl Relay {
    /// Notes traffic on the link for the idle timers (only when the link is timed).
    #[inline]
    fn touch(&mut self) {
        if self.timed {
            self.clock.last_activity = Instant::now();
        }
    }

    /// Scans `n` client bytes read at `start`; a refused message is cut from the buffer
    /// with everything after it (the caller ends the link).
    pub(super) fn scan_client(&mut self, start: usize, n: usize) -> Result<(), ClientViolation> {
        self.touch();
        let buf = if self.rewriter.is_some() {
            &mut self.cin
        } else {
            &mut self.c2s
        };
        let tracker = &mut self.tracker;
        let timed = self.timed;
        let clock = &mut self.clock;
        let stats = &mut self.stats;
        stats.client_bytes(n);
        let validator = &mut self.validator;
        let mut terminate_at = None;
        let mut refused = None;
        let consumed = self
            .client_scan
            .feed(&buf[start..start + n], client_capture, |ev| {
                match ev {
                    ScanEvent::Header { tag, len } if refused.is_none() => {
                        match client_header(tracker, validator, stats, clock, timed, tag, len) {
                            Ok(true) => {}
                            Ok(false) => {
                                terminate_at = Some(());
                                return false;
                            }
                            Err(e) => {
                                refused = Some(e);
                                return false;
                            }
                        }
                    }
                    ScanEvent::Header { .. } => return false,
                    ScanEvent::Message { tag, body } => tracker.client_body(tag, body),
                }
                true
            });
        let consumed = match consumed {
            Ok(c) => c,
            Err(e) => {
                refused = Some(e.into());
                self.client_scan.consumed_before_error()
            }
        };
        if let Some(e) = refused {
            // Partial headers are held back from the server (see `forwardable`), so the
            // whole header is still in the buffer: drop it and everything after it.
            buf.truncate((start + consumed).saturating_sub(5));
            return Err(e);
        }
        if terminate_at.is_some() {
            // Terminate is for pgfunnel, never for the server; drop it and what follows.
            buf.truncate((start + consumed).saturating_sub(5));
            self.client_terminated = true;
        }
        Ok(())
    }

    /// Scans `n` server bytes read at `start`, keeping `params` (the server's reported
    /// parameters) and `seen` (the client's view) current.
    pub(super) fn scan_server(
        &mut self,
        start: usize,
        n: usize,
        params: &mut HashMap<String, String>,
        seen: &mut Reported,
    ) -> Result<(), FrameError> {
        self.touch();
        let buf = if self.rewriter.is_some() {
            &self.sin
        } else {
            &self.s2c
        };
        let tracker = &mut self.tracker;
        let statement_mode = self.mode == RelayMode::Statement;
        let violation = &mut self.statement_violation;
        let params_changed = &mut self.params_changed;
        let timed = self.timed;
        let clock = &mut self.clock;
        let stats = &mut self.stats;
        stats.server_bytes(n);
        let validator = &mut self.validator;
        self.server_scan
            .feed(&buf[start..start + n], server_capture, |ev| {
                let (tag, body) = match ev {
                    ScanEvent::Header { tag, .. } => {
                        validator.server_message(tag);
                        return true;
                    }
                    ScanEvent::Message { tag, body } => (tag, body),
                };
                match tag {
                    tag::READY_FOR_QUERY => {
                        let status = body.first().copied().unwrap_or(b'I');
                        if statement_mode && status != b'I' {
                            *violation = true;
                        }
                        tracker.ready_for_query(status);
                        stats.ready(status);
                        if timed {
                            clock.tick(status, tracker.nothing_outstanding());
                        }
                    }
                    tag::PARAMETER_STATUS => {
                        *params_changed = true;
                        parameter_status(tracker, body, params, seen);
                    }
                    tag::ERROR_RESPONSE => tracker.server_error(),
                    b'C' => tracker.command_complete(body),
                    _ => {}
                }
                true
            })?;
        Ok(())
    }
}

/// Which client message bodies the scanner captures: those the tracker reads.
#[inline]
fn client_capture(tag: u8, len: u32) -> Capture {
    if Tracker::wants_client_body(tag, len) {
        Capture::Body
    } else {
        Capture::Skip
    }
}

/// Which server message bodies the scanner captures: those the tracker reads.
#[inline]
fn server_capture(t: u8, _: u32) -> Capture {
    if Tracker::wants_server_body(t) {
        Capture::Body
    } else {
        Capture::Skip
    }
}

/// One client message header: tracked, validated, counted and timed. `Ok(false)` for a
/// Terminate (the scan stops there); an error for a refused message.
#[inline]
fn client_header(
    tracker: &mut Tracker,
    validator: &mut Validator,
    stats: &mut LinkStats,
    clock: &mut LinkClock,
    timed: bool,
    tag: u8,
    len: u32,
) -> Result<bool, ClientViolation> {
    tracker.client_length(tag, len);
    let unanswered = !tracker.nothing_outstanding();
    validator.client_message(tag, len, unanswered)?;
    if tag == b'X' {
        return Ok(false);
    }
    if matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'S' | b'F') {
        stats.request();
    }
    if timed && matches!(tag, b'Q' | b'S' | b'F') && clock.busy_since.is_none() {
        clock.busy_since = Some(Instant::now());
        clock.epoch += 1;
    }
    tracker.client_message(tag);
    Ok(true)
}

/// A ParameterStatus from the server: `params` (the server's reported parameters) and
/// `seen` (the client's view) take the new value; the tracker notes the change.
#[inline]
fn parameter_status(
    tracker: &mut Tracker,
    body: &[u8],
    params: &mut HashMap<String, String>,
    seen: &mut Reported,
) {
    if let Some((k, v)) = parse_parameter_status(body) {
        tracker.parameter_status(&k, params.get(&k), &v);
        seen.insert(k.clone(), v.clone());
        params.insert(k, v);
    }
}
