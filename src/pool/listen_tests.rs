use super::task::join;
use super::*;

fn test_hub() -> Arc<ListenHub> {
    let (tx, _rx) = mpsc::unbounded_channel();
    Arc::new(ListenHub {
        subs: Mutex::new(Subscribers::default()),
        commands: tx,
        overflows: AtomicU64::new(0),
        own_servers: OwnServers::default(),
    })
}

#[tokio::test]
async fn a_full_queue_raises_overflow_once_instead_of_dropping_silently() {
    let hub = test_hub();
    let mut a = hub.subscribe(1, 2);
    let b = hub.subscribe(2, 2);
    let cmds = [(1, a.to.clone()), (2, b.to.clone())].map(|(id, to)| Command::Listen {
        channel: "jobs".into(),
        client: id,
        to,
        ack: oneshot::channel().0,
    });
    join(&Arc::downgrade(&hub), cmds.into_iter());
    hub.fan_out("jobs", Bytes::from_static(b"n1"));
    assert_eq!(a.rx.try_recv().ok(), Some(Bytes::from_static(b"n1")));
    hub.fan_out("jobs", Bytes::from_static(b"n2"));
    hub.fan_out("jobs", Bytes::from_static(b"n3"));
    assert!(!a.overflow().happened(), "a reads its queue");
    assert!(b.overflow().happened(), "b's queue of 2 could not take n3");
    while a.rx.try_recv().is_ok() {}
    hub.fan_out("jobs", Bytes::from_static(b"n4"));
    assert_eq!(hub.overflows(), 1, "counted once per client");
    // The wait returns at once once raised.
    b.overflow().wait().await;
}

#[tokio::test]
async fn subscriptions_route_by_channel_and_clean_up_on_drop() {
    let hub = test_hub();
    let mut a = hub.subscribe(1, CLIENT_QUEUE);
    let mut b = hub.subscribe(2, CLIENT_QUEUE);
    let (atx, btx) = (a.to.clone(), b.to.clone());
    join(
        &Arc::downgrade(&hub),
        [
            ("jobs", 1, atx),
            ("jobs", 2, btx.clone()),
            ("other", 2, btx),
        ]
        .into_iter()
        .map(|(c, id, to)| Command::Listen {
            channel: c.into(),
            client: id,
            to,
            ack: oneshot::channel().0,
        }),
    );
    a.channels.insert("jobs".into());
    b.channels.extend(["jobs".to_owned(), "other".to_owned()]);
    hub.fan_out("jobs", Bytes::from_static(b"n1"));
    hub.fan_out("other", Bytes::from_static(b"n2"));
    assert_eq!(a.rx.try_recv().ok(), Some(Bytes::from_static(b"n1")));
    assert!(a.rx.try_recv().is_err(), "a does not listen on other");
    assert_eq!(b.rx.try_recv().ok(), Some(Bytes::from_static(b"n1")));
    assert_eq!(b.rx.try_recv().ok(), Some(Bytes::from_static(b"n2")));
    a.unlisten(Some("jobs"));
    drop(b);
    assert!(
        hub.channels().is_empty(),
        "no listener left: nothing to LISTEN on"
    );
}
