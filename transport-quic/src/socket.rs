//! The UDP socket under every QUIC endpoint (the listener and each
//! client): buffers with room for bursts, and datagrams as large as the
//! path carries.
//!
//! A datagram costs the same work whatever its size: a system call or a
//! share of one, an encryption, a header protection, an entry in the
//! sender's table of packets in flight and an acknowledgement. On
//! Ethernet-sized datagrams (quinn's default ceiling, 1,452 bytes) a
//! 64 KiB body is 46 datagrams each way, and that per-datagram work, not
//! the bytes, is what a large call spent its time on. So every endpoint
//! accepts datagrams up to [`MAX_UDP_PAYLOAD`] and its path MTU discovery
//! searches up to that size: where the path carries more than Ethernet
//! (loopback: 64 KiB; jumbo frames: 9,000) a 64 KiB body takes a handful of
//! datagrams, and where it does not, discovery stops at what it carries.
//! Probes too large for the path are lost (or refused by the kernel before
//! they leave) without costing the connection anything but the probe.
//!
//! quinn hands the socket up to ten datagrams in one segmented send (GSO),
//! but the kernel refuses a send of more than 64 KiB, and quinn-udp drops
//! such a refusal silently (as it must for a too-large MTU probe): ten
//! 16 KiB datagrams would be lost every time. [`Socket`] therefore splits a
//! segmented send into sends of at most [`MAX_SEND`] bytes.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// The receive and send buffers asked for on a QUIC endpoint's UDP socket.
///
/// A QUIC connection sends a large body as a burst of datagrams. With the
/// kernel's default receive buffer (208 KiB on Linux), sixteen 64 KiB
/// calls in flight overflow it: datagrams are dropped, the sender waits for
/// its loss timers and shrinks its congestion window, and calls take tens
/// of milliseconds. The kernel caps the size at `net.core.rmem_max` /
/// `wmem_max`; the socket keeps what it was given, and a smaller buffer is
/// logged.
pub(crate) const UDP_BUFFER: usize = 4 << 20;

/// The largest UDP payload an endpoint accepts (its `max_udp_payload_size`
/// transport parameter) and the ceiling of its path MTU discovery: what a
/// loopback interface (MTU 65,536) carries over IPv4 and IPv6 alike.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_000;

/// The most bytes one send hands the kernel: a UDP datagram, segmented or
/// not, must fit the 16-bit length of an IP packet.
pub(crate) const MAX_SEND: usize = 65_000;

/// The room for one received message (a batch of coalesced datagrams,
/// GRO): 64 Ethernet-sized datagrams, more than the 64 KiB the kernel
/// coalesces at most. quinn sizes its buffers by the largest datagram
/// times the segments a batch may have (64), which for 65,000-byte
/// datagrams and 32 messages a read would be 127 MiB per endpoint; this
/// keeps it at 4 MiB.
const MAX_RECEIVE_BATCH: usize = 64 * 1500;

/// A QUIC endpoint on a UDP socket bound at `addr` (see the [module
/// documentation](self)), serving with `server` if given. Must be called
/// within a Tokio runtime.
pub(crate) fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("a QUIC endpoint needs a Tokio runtime"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| io::Error::other(format!("largest UDP payload: {e}")))?;
    let socket = Socket::new(udp_socket(addr)?)?;
    quinn::Endpoint::new_with_abstract_socket(config, server, Arc::new(socket), runtime)
}

/// A UDP socket bound at `addr` for a QUIC endpoint, with buffers of
/// [`UDP_BUFFER`] where the kernel allows.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, asked, got) in [
        (
            "receive",
            socket.set_recv_buffer_size(UDP_BUFFER),
            socket.recv_buffer_size(),
        ),
        (
            "send",
            socket.set_send_buffer_size(UDP_BUFFER),
            socket.send_buffer_size(),
        ),
    ] {
        match (asked, got) {
            // Linux reports twice the size asked, for its own bookkeeping.
            (Ok(()), Ok(size)) if size >= UDP_BUFFER => {}
            (Ok(()), Ok(size)) => tracing::debug!(
                buffer = what,
                asked = UDP_BUFFER,
                got = size,
                "the kernel capped a QUIC socket's buffer (net.core.rmem_max / wmem_max); \
                 large bursts may be dropped and resent"
            ),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(buffer = what, error = %e, "could not size a QUIC socket's buffer");
            }
        }
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The sends one transmit of `len` bytes in segments of `segment` bytes
/// is split into: as many whole segments as fit in [`MAX_SEND`], at least
/// one. Yields the byte ranges, in order.
fn sends(len: usize, segment: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = (MAX_SEND / segment.max(1)).max(1) * segment.max(1);
    (0..len)
        .step_by(step)
        .map(move |start| start..len.min(start + step))
}

/// quinn's Tokio UDP socket, but a segmented send larger than the kernel
/// takes at once goes out as several (see the [module
/// documentation](self)).
pub(crate) struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("addr", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// Wraps a bound, non-blocking socket; turns on segmentation offload
    /// and the other options quinn-udp sets where the platform has them.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Socket> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Socket {
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
        })
    }

    fn send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })
    }
}

impl AsyncUdpSocket for Socket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let segment = match transmit.segment_size {
            Some(segment) if transmit.contents.len() > MAX_SEND => segment,
            _ => return self.send(transmit),
        };
        // Every part but the last is whole segments. Should a later part
        // not fit the socket's buffer, the whole transmit is tried again
        // once the socket is writable: the peer drops the datagrams it
        // already has as duplicates, where dropping the rest would cost a
        // loss and a smaller congestion window.
        for range in sends(transmit.contents.len(), segment) {
            let contents = &transmit.contents[range];
            self.send(&Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents,
                segment_size: (contents.len() > segment).then_some(segment),
                src_ip: transmit.src_ip,
            })?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            if let Ok(received) = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(received));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// quinn sizes each receive buffer as this many datagrams of the
    /// largest payload accepted: enough for one coalesced batch.
    fn max_receive_segments(&self) -> usize {
        if self.state.gro_segments() <= 1 {
            return 1;
        }
        MAX_RECEIVE_BATCH.div_ceil(usize::from(MAX_UDP_PAYLOAD))
    }
}

/// Waits until a [`Socket`] can send.
struct Writable(Arc<Socket>);

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Writable").field(&self.0).finish()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.io.poll_send_ready(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use quinn::udp::Transmit;
    use quinn::AsyncUdpSocket;

    use super::{endpoint, sends, udp_socket, Socket, MAX_SEND, MAX_UDP_PAYLOAD, UDP_BUFFER};
    use crate::tls::{pinned_client_config, transport, ServerTls};

    #[test]
    fn endpoint_sockets_get_room_for_bursts_as_far_as_the_kernel_allows() {
        let socket = udp_socket("127.0.0.1:0".parse().expect("address")).expect("bound");
        let got = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("size");
        // Linux caps the size at net.core.rmem_max, and reports twice what it keeps.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok());
        let least = cap.map_or(UDP_BUFFER, |cap| UDP_BUFFER.min(cap));
        assert!(
            got >= least,
            "receive buffer {got}, expected at least {least}"
        );
        assert!(socket.local_addr().expect("address").port() > 0);
    }

    #[test]
    fn segmented_sends_are_split_into_whole_segments_the_kernel_takes() {
        // Ten 16,000-byte datagrams: four per send, then two.
        let parts: Vec<_> = sends(160_000, 16_000).collect();
        assert_eq!(parts, vec![0..64_000, 64_000..128_000, 128_000..160_000]);
        // Ethernet-sized datagrams fit in one send.
        assert_eq!(sends(14_520, 1_452).collect::<Vec<_>>(), vec![0..14_520]);
        // The last datagram of a transmit may be short.
        let parts: Vec<_> = sends(3 * 30_000 + 7, 30_000).collect();
        assert_eq!(parts, vec![0..60_000, 60_000..90_007]);
        // The largest datagram goes alone.
        let largest = usize::from(MAX_UDP_PAYLOAD);
        let parts: Vec<_> = sends(2 * largest, largest).collect();
        assert_eq!(parts, vec![0..largest, largest..2 * largest]);
        for (len, segment) in [(160_000, 16_000), (650_000, 65_000), (14_520, 1_452)] {
            for part in sends(len, segment) {
                assert!(part.len() <= MAX_SEND);
                assert!(part.start % segment == 0);
            }
        }
    }

    #[tokio::test]
    async fn a_segmented_send_larger_than_the_kernel_takes_arrives_whole() {
        let socket = Socket::new(udp_socket("127.0.0.1:0".parse().expect("addr")).expect("bound"))
            .expect("socket");
        if socket.max_transmit_segments() < 10 {
            eprintln!("no segmentation offload on this platform: nothing to split");
            return;
        }
        let receiver = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("bound");
        receiver.set_nonblocking(false).expect("blocking");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Ten datagrams of 16,000 bytes, each filled with its own index:
        // 160,000 bytes in one transmit, which the kernel refuses whole.
        let segment = 16_000;
        let contents: Vec<u8> = (0..10u8)
            .flat_map(|i| std::iter::repeat_n(i, segment))
            .collect();
        let socket = Arc::new(socket);
        let mut writable = Arc::clone(&socket).create_io_poller();
        let transmit = Transmit {
            destination: receiver.local_addr().expect("addr"),
            ecn: None,
            contents: &contents,
            segment_size: Some(segment),
            src_ip: None,
        };
        // As quinn sends: wait until the socket is writable, try, and wait
        // again if the kernel had no room after all.
        loop {
            std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx))
                .await
                .expect("writable");
            match socket.try_send(&transmit) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("send failed: {e}"),
            }
        }
        let mut buf = vec![0u8; 65_536];
        for i in 0..10u8 {
            let len = receiver.recv(&mut buf).expect("datagram received");
            assert_eq!(len, segment, "datagram {i}");
            assert!(
                buf[..len].iter().all(|b| *b == i),
                "datagram {i} in order and intact"
            );
        }
    }

    /// An echo server and a client on loopback, each on an [`endpoint`]
    /// with the crate's [`transport`].
    async fn loopback_pair() -> (quinn::Endpoint, quinn::Connection) {
        let tls = ServerTls::self_signed(&["localhost"]).expect("tls");
        let mut server =
            quinn::ServerConfig::with_crypto(Arc::new(tls.quic_config().expect("tls")));
        let config =
            || transport(Duration::from_secs(10), Duration::from_secs(3), 16).expect("transport");
        server.transport_config(Arc::new(config()));
        let server = endpoint("127.0.0.1:0".parse().expect("addr"), Some(server)).expect("server");
        let serving = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = serving.accept().await {
                let Ok(connection) = incoming.await else {
                    continue;
                };
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        tokio::spawn(async move {
                            let body = recv.read_to_end(usize::MAX).await.expect("request");
                            send.write_all(&body).await.expect("echoed");
                            send.finish().expect("finished");
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        });
        let mut client = pinned_client_config(&tls.fingerprint()).expect("client");
        client.transport_config(Arc::new(config()));
        let mut near = endpoint("127.0.0.1:0".parse().expect("addr"), None).expect("client");
        near.set_default_client_config(client);
        let connection = near
            .connect(server.local_addr().expect("addr"), "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        (near, connection)
    }

    async fn echo(connection: &quinn::Connection, body: &[u8]) -> Vec<u8> {
        let (mut send, mut recv) = connection.open_bi().await.expect("stream");
        send.write_all(body).await.expect("sent");
        send.finish().expect("finished");
        recv.read_to_end(usize::MAX).await.expect("answer")
    }

    #[tokio::test]
    async fn on_loopback_datagrams_grow_past_ethernet_size_and_bodies_stay_whole() {
        let loopback_mtu = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok());
        let (_endpoint, connection) = loopback_pair().await;
        let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo(&connection, &body).await, body);
        let Some(lo) = loopback_mtu.filter(|mtu| *mtu > usize::from(MAX_UDP_PAYLOAD)) else {
            eprintln!("loopback MTU {loopback_mtu:?}: no room for datagrams past Ethernet size");
            return;
        };
        // Path MTU discovery searches up to MAX_UDP_PAYLOAD, which both
        // ends accept; on loopback it gets there within a few round trips.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut mtu = connection.stats().path.current_mtu;
        while mtu < 60_000 && tokio::time::Instant::now() < until {
            assert_eq!(
                echo(&connection, &body[..64 * 1024]).await,
                &body[..64 * 1024]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            mtu = connection.stats().path.current_mtu;
        }
        assert!(
            (60_000..=MAX_UDP_PAYLOAD).contains(&mtu),
            "datagrams of {mtu} bytes on a loopback of MTU {lo}"
        );
        // At that size a 1 MiB body goes out in segmented sends the socket
        // splits; it arrives whole.
        assert_eq!(echo(&connection, &body).await, body);
    }
}
