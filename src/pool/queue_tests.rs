use std::time::Duration;

use super::*;

fn plan_none() -> Plan {
    Plan::default()
}

/// Polls `w` once without waiting.
fn poll_now<T: Send + 'static>(w: &mut Waiting<T>) -> Option<Event<T>> {
    use futures_util::FutureExt;
    w.next().now_or_never()
}

fn granted<T: Send + 'static>(e: Option<Event<T>>) -> Grant<T> {
    match e {
        Some(Event::Granted(g)) => g,
        Some(Event::Notice) => panic!("a notice, not a grant"),
        Some(Event::TimedOut) => panic!("timed out, not granted"),
        Some(Event::Interrupted) => panic!("interrupted, not granted"),
        None => panic!("nothing yet"),
    }
}

#[tokio::test]
async fn a_returned_connection_goes_to_the_oldest_waiter_with_its_slot() {
    let q = SlotQueue::<u32>::new(1, 0);
    let (held, none) = q.take_or_queue(false, plan_none).expect("a free slot");
    assert!(none.is_none());
    let mut first = q.take_or_queue(false, plan_none).expect_err("queued");
    let mut second = q.take_or_queue(false, plan_none).expect_err("queued");
    assert!(poll_now(&mut first).is_none(), "nothing to hand over yet");
    q.checkin(held, Some(7));
    let (slot, conn) = granted(poll_now(&mut first));
    assert_eq!(conn, Some(7), "the connection itself is handed over");
    assert!(poll_now(&mut second).is_none(), "the second waits on");
    assert_eq!(q.with_idle(|i| i.len()), 0, "never idle in between");
    drop(slot);
    let (_slot, conn) = granted(poll_now(&mut second));
    assert_eq!(conn, None, "a slot freed without a connection comes alone");
    assert_eq!(q.available(), 0);
}

#[tokio::test]
async fn a_waiter_that_gave_up_never_swallows_a_connection_or_a_slot() {
    let q = SlotQueue::<u32>::new(1, 0);
    let (held, _) = q.take_or_queue(false, plan_none).expect("a free slot");
    let gone_before = q.take_or_queue(false, plan_none).expect_err("queued");
    let granted_then_gone = q.take_or_queue(false, plan_none).expect_err("queued");
    let last = q.take_or_queue(false, plan_none).expect_err("queued");
    drop(gone_before);
    // Skips the waiter that left; the next one is handed the connection and leaves
    // without looking, and so does the last one.
    q.checkin(held, Some(1));
    drop(granted_then_gone);
    drop(last);
    assert_eq!(q.with_idle(|i| i.clone()), vec![1], "back in the idle list");
    assert_eq!(q.available(), 1, "the slot is free again");
    let (_s, conn) = q.take_or_queue(false, plan_none).expect("free");
    assert_eq!(conn, Some(1));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_task_tells_then_times_out_the_head() {
    let q = SlotQueue::<u32>::new(1, 0);
    let (_held, _) = q.take_or_queue(false, plan_none).expect("a free slot");
    let start = Instant::now();
    let plan = move || Plan {
        notice_at: Some(start + Duration::from_secs(1)),
        reserve_at: None,
        deadline: Some(start + Duration::from_secs(3)),
    };
    let mut w = q.take_or_queue(false, plan).expect_err("queued");
    assert!(matches!(w.next().await, Event::Notice));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(matches!(w.next().await, Event::TimedOut));
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn the_reserve_goes_to_a_head_past_reserve_pool_timeout_and_comes_back() {
    let q = SlotQueue::<u32>::new(1, 1);
    let (held, _) = q.take_or_queue(false, plan_none).expect("a free slot");
    let start = Instant::now();
    let plan = move || Plan {
        reserve_at: Some(start + Duration::from_secs(2)),
        ..Plan::default()
    };
    let mut w = q.take_or_queue(false, plan).expect_err("queued");
    let (reserve, _) = match w.next().await {
        Event::Granted(g) => g,
        _ => panic!("expected the reserve slot"),
    };
    assert!(reserve.is_reserve());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let mut next = q.take_or_queue(false, plan_none).expect_err("queued");
    drop(reserve);
    assert!(
        poll_now(&mut next).is_none(),
        "a reserve slot only goes to a waiter past its reserve_pool_timeout"
    );
    drop(held);
    let (slot, _) = granted(poll_now(&mut next));
    assert!(!slot.is_reserve());
}

#[tokio::test]
async fn resizing_grants_new_slots_to_waiters_and_retires_held_ones_on_return() {
    let q = SlotQueue::<u32>::new(2, 0);
    let (a, _) = q.take_or_queue(false, plan_none).expect("free");
    let (b, _) = q.take_or_queue(false, plan_none).expect("free");
    let mut w = q.take_or_queue(false, plan_none).expect_err("queued");
    q.resize(2, 3);
    let (c, _) = granted(poll_now(&mut w));
    q.resize(3, 1);
    assert_eq!(q.available(), 0);
    let mut w2 = q.take_or_queue(false, plan_none).expect_err("queued");
    q.checkin(a, Some(5));
    drop(b);
    assert!(poll_now(&mut w2).is_none(), "both returns pay the shrink");
    assert_eq!(
        q.with_idle(|i| i.clone()),
        vec![5],
        "the connection stays idle"
    );
    drop(c);
    let (_d, conn) = granted(poll_now(&mut w2));
    assert_eq!(conn, None);
}

#[tokio::test]
async fn an_interrupted_waiter_keeps_its_place() {
    let q = SlotQueue::<u32>::new(1, 0);
    let (held, _) = q.take_or_queue(false, plan_none).expect("a free slot");
    let mut first = q.take_or_queue(false, plan_none).expect_err("queued");
    let mut second = q.take_or_queue(false, plan_none).expect_err("queued");
    q.interrupt_all();
    assert!(matches!(poll_now(&mut first), Some(Event::Interrupted)));
    assert!(matches!(poll_now(&mut second), Some(Event::Interrupted)));
    assert!(poll_now(&mut first).is_none(), "once per interrupt");
    q.checkin(held, Some(3));
    let (_slot, conn) = granted(poll_now(&mut first));
    assert_eq!(conn, Some(3), "still the oldest waiter");
    assert!(poll_now(&mut second).is_none());
}
