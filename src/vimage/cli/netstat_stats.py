"""netstat -s: protocol statistics as FreeBSD's usr.bin/netstat/inet.c and inet6.c
print them.

Every line is FreeBSD's libxo format string, in FreeBSD's order, with the macro it is
printed by (FreeBSD 13's inet.c tcp_stats, udp_stats, ip_stats, arp_stats,
icmp_stats; inet6.c ip6_stats, icmp6_stats):

    p      one counter, `plural()` of it (packet / packets)
    p1a    one counter, no plural (`with bad checksum`)
    p2     two counters, a plural for each (`1 data packet (512 bytes)`)
    p2a    two counters, a plural for the first only
    p3     one counter, `pluralies()` (entry / entries)
    pes    one counter, `plurales()` (address / addresses)

and the pieces around them: `open`/`close` (a libxo container, e.g. tcp's
`syncache`), `hist` (icmp's histograms), `states` (tcp's connection count by
state), `delivered` (udp's, computed), `maskrepl`, `title`, `always` (a line
printed even with `-s -s`) and `newline_if` (the end of ip's forwarded line).

A line is left out with `-s -s` when its counters are zero (`sflag > 1`), as in
inet.c. Lines after FreeBSD's, marked VIMAGE, are counters vimage keeps that FreeBSD
does not print (fault injection, the ARP table limit, ...); they follow the same
rules. The counters are the attributes of each protocol's stats object (the counter
names of netinet/*.py, FreeBSD's without their `ips_`/`tcps_` prefix).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.cli._libxo import compile_format
from vimage.netinet import icmp, tcp

if TYPE_CHECKING:
    from vimage.cli._libxo import Xo
    from vimage.protosw import Protocol
    from vimage.vnet import Vnet

Line = tuple[str, tuple[str, ...], str]

TCP: tuple[Line, ...] = (
    ("p", ("sndtotal",), "\t{:sent-packets/%ju} {N:/packet%s sent}\n"),
    ("p2", ("sndpack", "sndbyte"), "\t\t{:sent-data-packets/%ju} "
     "{N:/data packet%s} ({:sent-data-bytes/%ju} {N:/byte%s})\n"),
    ("p2", ("sndrexmitpack", "sndrexmitbyte"), "\t\t"
     "{:sent-retransmitted-packets/%ju} {N:/data packet%s} "
     "({:sent-retransmitted-bytes/%ju} {N:/byte%s}) {N:retransmitted}\n"),
    ("p", ("sndrexmitbad",), "\t\t{:sent-unnecessary-retransmitted-packets/%ju} "
     "{N:/data packet%s unnecessarily retransmitted}\n"),
    ("p", ("mturesent",), "\t\t{:sent-resends-by-mtu-discovery/%ju} "
     "{N:/resend%s initiated by MTU discovery}\n"),
    ("p2a", ("sndacks", "delack"), "\t\t{:sent-ack-only-packets/%ju} "
     "{N:/ack-only packet%s/} ({:sent-packets-delayed/%ju} {N:delayed})\n"),
    ("p", ("sndurg",), "\t\t{:sent-urg-only-packets/%ju} {N:/URG only packet%s}\n"),
    ("p", ("sndprobe",), "\t\t{:sent-window-probe-packets/%ju} "
     "{N:/window probe packet%s}\n"),
    ("p", ("sndwinup",), "\t\t{:sent-window-update-packets/%ju} "
     "{N:/window update packet%s}\n"),
    ("p", ("sndctrl",), "\t\t{:sent-control-packets/%ju} {N:/control packet%s}\n"),
    ("p", ("rcvtotal",), "\t{:received-packets/%ju} {N:/packet%s received}\n"),
    ("p2", ("rcvackpack", "rcvackbyte"), "\t\t{:received-ack-packets/%ju} {N:/ack%s} "
     "{N:(for} {:received-ack-bytes/%ju} {N:/byte%s})\n"),
    ("p", ("rcvdupack",), "\t\t{:received-duplicate-acks/%ju} {N:/duplicate ack%s}\n"),
    ("p", ("rcvacktoomuch",), "\t\t{:received-acks-for-unsent-data/%ju} "
     "{N:/ack%s for unsent data}\n"),
    ("p2", ("rcvpack", "rcvbyte"), "\t\t{:received-in-sequence-packets/%ju} "
     "{N:/packet%s} ({:received-in-sequence-bytes/%ju} {N:/byte%s}) "
     "{N:received in-sequence}\n"),
    ("p2", ("rcvduppack", "rcvdupbyte"), "\t\t"
     "{:received-completely-duplicate-packets/%ju} {N:/completely duplicate packet%s} "
     "({:received-completely-duplicate-bytes/%ju} {N:/byte%s})\n"),
    ("p", ("pawsdrop",), "\t\t{:received-old-duplicate-packets/%ju} "
     "{N:/old duplicate packet%s}\n"),
    ("p2", ("rcvpartduppack", "rcvpartdupbyte"), "\t\t"
     "{:received-some-duplicate-packets/%ju} {N:/packet%s with some dup. data} "
     "({:received-some-duplicate-bytes/%ju} {N:/byte%s duped/})\n"),
    ("p2", ("rcvoopack", "rcvoobyte"), "\t\t{:received-out-of-order/%ju} "
     "{N:/out-of-order packet%s} ({:received-out-of-order-bytes/%ju} {N:/byte%s})\n"),
    ("p2", ("rcvpackafterwin", "rcvbyteafterwin"), "\t\t"
     "{:received-after-window-packets/%ju} {N:/packet%s} "
     "({:received-after-window-bytes/%ju} {N:/byte%s}) {N:of data after window}\n"),
    ("p", ("rcvwinprobe",), "\t\t{:received-window-probes/%ju} {N:/window probe%s}\n"),
    ("p", ("rcvwinupd",), "\t\t{:receive-window-update-packets/%ju} "
     "{N:/window update packet%s}\n"),
    ("p", ("rcvafterclose",), "\t\t{:received-after-close-packets/%ju} "
     "{N:/packet%s received after close}\n"),
    ("p", ("rcvbadsum",), "\t\t{:discard-bad-checksum/%ju} "
     "{N:/discarded for bad checksum%s}\n"),
    ("p", ("rcvbadoff",), "\t\t{:discard-bad-header-offset/%ju} "
     "{N:/discarded for bad header offset field%s}\n"),
    ("p1a", ("rcvshort",), "\t\t{:discard-too-short/%ju} "
     "{N:discarded because packet too short}\n"),
    ("p1a", ("rcvmemdrop",), "\t\t{:discard-memory-problems/%ju} "
     "{N:discarded due to memory problems}\n"),
    # tcps_rcvreassfull (FreeBSD 12 and later, with the other discards)
    ("p1a", ("rcvreassfull",), "\t\t{:discard-due-to-full-reassembly-queue/%ju} "
     "{N:discarded due to full reassembly queue}\n"),
    ("p", ("connattempt",), "\t{:connection-requests/%ju} {N:/connection request%s}\n"),
    ("p", ("accepts",), "\t{:connections-accepts/%ju} {N:/connection accept%s}\n"),
    ("p", ("badsyn",), "\t{:bad-connection-attempts/%ju} "
     "{N:/bad connection attempt%s}\n"),
    ("p", ("listendrop",), "\t{:listen-queue-overflows/%ju} "
     "{N:/listen queue overflow%s}\n"),
    ("p", ("badrst",), "\t{:ignored-in-window-resets/%ju} "
     "{N:/ignored RSTs in the window%s}\n"),
    ("p", ("connects",), "\t{:connections-established/%ju} "
     "{N:/connection%s established (including accepts)}\n"),
    ("p", ("usedrtt",), "\t\t{:connections-hostcache-rtt/%ju} "
     "{N:/time%s used RTT from hostcache}\n"),
    ("p", ("usedrttvar",), "\t\t{:connections-hostcache-rttvar/%ju} "
     "{N:/time%s used RTT variance from hostcache}\n"),
    ("p", ("usedssthresh",), "\t\t{:connections-hostcache-ssthresh/%ju} "
     "{N:/time%s used slow-start threshold from hostcache}\n"),
    ("p2", ("closed", "drops"), "\t{:connections-closed/%ju} "
     "{N:/connection%s closed (including} {:connection-drops/%ju} {N:/drop%s})\n"),
    ("p", ("cachedrtt",), "\t\t{:connections-updated-rtt-on-close/%ju} "
     "{N:/connection%s updated cached RTT on close}\n"),
    ("p", ("cachedrttvar",), "\t\t{:connections-updated-variance-on-close/%ju} "
     "{N:/connection%s updated cached RTT variance on close}\n"),
    ("p", ("cachedssthresh",), "\t\t{:connections-updated-ssthresh-on-close/%ju} "
     "{N:/connection%s updated cached ssthresh on close}\n"),
    ("p", ("conndrops",), "\t{:embryonic-connections-dropped/%ju} "
     "{N:/embryonic connection%s dropped}\n"),
    ("p2", ("rttupdated", "segstimed"), "\t{:segments-updated-rtt/%ju} "
     "{N:/segment%s updated rtt (of} {:segment-update-attempts/%ju} {N:/attempt%s})\n"),
    ("p", ("rexmttimeo",), "\t{:retransmit-timeouts/%ju} {N:/retransmit timeout%s}\n"),
    ("p", ("timeoutdrop",), "\t\t{:connections-dropped-by-retransmit-timeout/%ju} "
     "{N:/connection%s dropped by rexmit timeout}\n"),
    ("p", ("persisttimeo",), "\t{:persist-timeout/%ju} {N:/persist timeout%s}\n"),
    ("p", ("persistdrop",), "\t\t{:connections-dropped-by-persist-timeout/%ju} "
     "{N:/connection%s dropped by persist timeout}\n"),
    ("p", ("finwait2_drops",), "\t{:connections-dropped-by-finwait2-timeout/%ju} "
     "{N:/Connection%s (fin_wait_2) dropped because of timeout}\n"),
    ("p", ("keeptimeo",), "\t{:keepalive-timeout/%ju} {N:/keepalive timeout%s}\n"),
    ("p", ("keepprobe",), "\t\t{:keepalive-probes/%ju} {N:/keepalive probe%s sent}\n"),
    ("p", ("keepdrops",), "\t\t{:connections-dropped-by-keepalives/%ju} "
     "{N:/connection%s dropped by keepalive}\n"),
    ("p", ("predack",), "\t{:ack-header-predictions/%ju} "
     "{N:/correct ACK header prediction%s}\n"),
    ("p", ("preddat",), "\t{:data-packet-header-predictions/%ju} "
     "{N:/correct data packet header prediction%s}\n"),
    ("open", ("syncache",), ""),
    ("p3", ("sc_added",), "\t{:entries-added/%ju} {N:/syncache entr%s added}\n"),
    ("p1a", ("sc_retransmitted",), "\t\t{:retransmitted/%ju} {N:/retransmitted}\n"),
    ("p1a", ("sc_dupsyn",), "\t\t{:duplicates/%ju} {N:/dupsyn}\n"),
    ("p1a", ("sc_dropped",), "\t\t{:dropped/%ju} {N:/dropped}\n"),
    ("p1a", ("sc_completed",), "\t\t{:completed/%ju} {N:/completed}\n"),
    ("p1a", ("sc_bucketoverflow",), "\t\t{:bucket-overflow/%ju} {N:/bucket overflow}\n"),
    ("p1a", ("sc_cacheoverflow",), "\t\t{:cache-overflow/%ju} {N:/cache overflow}\n"),
    ("p1a", ("sc_reset",), "\t\t{:reset/%ju} {N:/reset}\n"),
    ("p1a", ("sc_stale",), "\t\t{:stale/%ju} {N:/stale}\n"),
    ("p1a", ("sc_aborted",), "\t\t{:aborted/%ju} {N:/aborted}\n"),
    ("p1a", ("sc_badack",), "\t\t{:bad-ack/%ju} {N:/badack}\n"),
    ("p1a", ("sc_unreach",), "\t\t{:unreachable/%ju} {N:/unreach}\n"),
    ("p", ("sc_zonefail",), "\t\t{:zone-failures/%ju} {N:/zone failure%s}\n"),
    ("p", ("cookiessent",), "\t{:sent-cookies/%ju} {N:/cookie%s sent}\n"),
    ("p", ("cookiesrcvd",), "\t{:receivd-cookies/%ju} {N:/cookie%s received}\n"),
    ("close", (), ""),
    ("open", ("hostcache",), ""),
    ("p3", ("hc_added",), "\t{:entries-added/%ju} {N:/hostcache entr%s added}\n"),
    ("p1a", ("hc_bucketoverflow",), "\t\t{:buffer-overflows/%ju} {N:/bucket overflow}\n"),
    ("close", (), ""),
    ("open", ("sack",), ""),
    ("p", ("sack_recovery",), "\t{:recovery-episodes/%ju} "
     "{N:/SACK recovery episode%s}\n"),
    ("p", ("sack_rexmits",), "\t{:segment-retransmits/%ju} "
     "{N:/segment rexmit%s in SACK recovery episodes}\n"),
    ("p", ("sack_rexmit_bytes",), "\t{:byte-retransmits/%ju} "
     "{N:/byte rexmit%s in SACK recovery episodes}\n"),
    ("p", ("sack_rcv_blocks",), "\t{:received-blocks/%ju} "
     "{N:/SACK option%s (SACK blocks) received}\n"),
    ("p", ("sack_send_blocks",), "\t{:sent-option-blocks/%ju} "
     "{N:/SACK option%s (SACK blocks) sent}\n"),
    ("p1a", ("sack_sboverflow",), "\t{:scoreboard-overflows/%ju} "
     "{N:/SACK scoreboard overflow}\n"),
    ("close", (), ""),
    ("open", ("ecn",), ""),
    ("p", ("ecn_ce",), "\t{:ce-packets/%ju} {N:/packet%s with ECN CE bit set}\n"),
    ("p", ("ecn_ect0",), "\t{:ect0-packets/%ju} {N:/packet%s with ECN ECT(0) bit set}\n"),
    ("p", ("ecn_ect1",), "\t{:ect1-packets/%ju} {N:/packet%s with ECN ECT(1) bit set}\n"),
    ("p", ("ecn_shs",), "\t{:handshakes/%ju} {N:/successful ECN handshake%s}\n"),
    ("p", ("ecn_rcwnd",), "\t{:congestion-reductions/%ju} "
     "{N:/time%s ECN reduced the congestion window}\n"),
    ("close", (), ""),
    ("open", ("tcp-signature",), ""),
    ("p", ("sig_rcvgoodsig",), "\t{:received-good-signature/%ju} "
     "{N:/packet%s with matching signature received}\n"),
    ("p", ("sig_rcvbadsig",), "\t{:received-bad-signature/%ju} "
     "{N:/packet%s with bad signature received}\n"),
    ("p", ("sig_err_buildsig",), "\t{:failed-make-signature/%ju} "
     "{N:/time%s failed to make signature due to no SA}\n"),
    ("p", ("sig_err_sigopt",), "\t{:no-signature-expected/%ju} "
     "{N:/time%s unexpected signature received}\n"),
    ("p", ("sig_err_nosigopt",), "\t{:no-signature-provided/%ju} "
     "{N:/time%s no signature provided by segment}\n"),
    ("close", (), ""),
    ("open", ("pmtud",), ""),
    ("p", ("pmtud_blackhole_activated",), "\t{:pmtud-activated/%ju} "
     "{N:/Path MTU discovery black hole detection activation%s}\n"),
    ("p", ("pmtud_blackhole_activated_min_mss",), "\t{:pmtud-activated-min-mss/%ju} "
     "{N:/Path MTU discovery black hole detection min MSS activation%s}\n"),
    ("p", ("pmtud_blackhole_failed",), "\t{:pmtud-failed/%ju} "
     "{N:/Path MTU discovery black hole detection failure%s}\n"),
    ("close", (), ""),
    # VIMAGE: counters FreeBSD keeps without printing them, or vimage's own
    ("p", ("fastrexmit",), "\t{:fast-retransmits/%ju} {N:/fast retransmit%s}\n"),
    ("p", ("challenge_acks",), "\t{:challenge-acks-sent/%ju} "
     "{N:/challenge ACK%s sent}\n"),
    ("p", ("ack_war_drops",), "\t{:ack-war-suppressed/%ju} "
     "{N:/ACK%s to unacceptable segments not sent (ACK war limit)}\n"),
    ("p", ("resets_sent",), "\t{:resets-sent/%ju} {N:/reset%s sent}\n"),
    ("p", ("resets_rcvd",), "\t{:resets-received/%ju} {N:/reset%s received}\n"),
    ("p", ("pmtud_updates",), "\t{:pmtud-updates/%ju} {N:/path MTU update%s}\n"),
    ("states", (), ""),
)

UDP: tuple[Line, ...] = (
    ("p", ("ipackets",), "\t{:received-datagrams/%ju} {N:/datagram%s received}\n"),
    ("p1a", ("hdrops",), "\t{:dropped-incomplete-headers/%ju} "
     "{N:/with incomplete header}\n"),
    ("p1a", ("badlen",), "\t{:dropped-bad-data-length/%ju} "
     "{N:/with bad data length field}\n"),
    ("p1a", ("badsum",), "\t{:dropped-bad-checksum/%ju} {N:/with bad checksum}\n"),
    ("p1a", ("nosum",), "\t{:dropped-no-checksum/%ju} {N:/with no checksum}\n"),
    ("p1a", ("noport",), "\t{:dropped-no-socket/%ju} {N:/dropped due to no socket}\n"),
    ("p", ("noportbcast",), "\t{:dropped-broadcast-multicast/%ju} "
     "{N:/broadcast\\/multicast datagram%s undelivered}\n"),
    ("p1a", ("fullsock",), "\t{:dropped-full-socket-buffer/%ju} "
     "{N:/dropped due to full socket buffers}\n"),
    ("p1a", ("pcbhashmiss",), "\t{:not-for-hashed-pcb/%ju} {N:/not for hashed pcb}\n"),
    ("delivered", (), "\t{:delivered-packets/%ju} {N:/delivered}\n"),
    ("p", ("opackets",), "\t{:output-packets/%ju} {N:/datagram%s output}\n"),
    ("p", ("filtermcast",), "\t{:multicast-source-filter-matches/%ju} "
     "{N:/time%s multicast source filter matched}\n"),
)

IP: tuple[Line, ...] = (
    ("p", ("total",), "\t{:received-packets/%ju} {N:/total packet%s received}\n"),
    ("p", ("badsum",), "\t{:dropped-bad-checksum/%ju} {N:/bad header checksum%s}\n"),
    ("p1a", ("toosmall",), "\t{:dropped-below-minimum-size/%ju} "
     "{N:/with size smaller than minimum}\n"),
    ("p1a", ("tooshort",), "\t{:dropped-short-packets/%ju} "
     "{N:/with data size < data length}\n"),
    ("p1a", ("toolong",), "\t{:dropped-too-long/%ju} "
     "{N:/with ip length > max ip packet size}\n"),
    ("p1a", ("badhlen",), "\t{:dropped-short-header-length/%ju} "
     "{N:/with header length < data size}\n"),
    ("p1a", ("badlen",), "\t{:dropped-short-data/%ju} "
     "{N:/with data length < header length}\n"),
    ("p1a", ("badoptions",), "\t{:dropped-bad-options/%ju} {N:/with bad options}\n"),
    ("p1a", ("badvers",), "\t{:dropped-bad-version/%ju} "
     "{N:/with incorrect version number}\n"),
    ("p", ("fragments",), "\t{:received-fragments/%ju} {N:/fragment%s received}\n"),
    ("p", ("fragdropped",), "\t{:dropped-fragments/%ju} "
     "{N:/fragment%s dropped (dup or out of space)}\n"),
    ("p", ("fragtimeout",), "\t{:dropped-fragments-after-timeout/%ju} "
     "{N:/fragment%s dropped after timeout}\n"),
    ("p", ("reassembled",), "\t{:reassembled-packets/%ju} "
     "{N:/packet%s reassembled ok}\n"),
    ("p", ("delivered",), "\t{:received-local-packets/%ju} {N:/packet%s for this host}\n"),
    ("p", ("noproto",), "\t{:dropped-unknown-protocol/%ju} "
     "{N:/packet%s for unknown\\/unsupported protocol}\n"),
    ("p", ("forward",), "\t{:forwarded-packets/%ju} {N:/packet%s forwarded}"),
    ("p", ("fastforward",), " ({:fast-forwarded-packets/%ju} "
     "{N:/packet%s fast forwarded})"),
    ("newline_if", ("forward",), "\n"),
    ("p", ("cantforward",), "\t{:packets-cannot-forward/%ju} "
     "{N:/packet%s not forwardable}\n"),
    ("p", ("notmember",), "\t{:received-unknown-multicast-group/%ju} "
     "{N:/packet%s received for unknown multicast group}\n"),
    ("p", ("redirectsent",), "\t{:redirects-sent/%ju} {N:/redirect%s sent}\n"),
    ("p", ("localout",), "\t{:sent-packets/%ju} {N:/packet%s sent from this host}\n"),
    ("p", ("rawout",), "\t{:send-packets-fabricated-header/%ju} "
     "{N:/packet%s sent with fabricated ip header}\n"),
    ("p", ("odropped",), "\t{:discard-no-mbufs/%ju} "
     "{N:/output packet%s dropped due to no bufs, etc.}\n"),
    ("p", ("noroute",), "\t{:discard-no-route/%ju} "
     "{N:/output packet%s discarded due to no route}\n"),
    ("p", ("fragmented",), "\t{:sent-fragments/%ju} {N:/output datagram%s fragmented}\n"),
    ("p", ("ofragments",), "\t{:fragments-created/%ju} {N:/fragment%s created}\n"),
    ("p", ("cantfrag",), "\t{:discard-cannot-fragment/%ju} "
     "{N:/datagram%s that can't be fragmented}\n"),
    ("p", ("nogif",), "\t{:discard-tunnel-no-gif/%ju} "
     "{N:/tunneling packet%s that can't find gif}\n"),
    ("p", ("badaddr",), "\t{:discard-bad-address/%ju} "
     "{N:/datagram%s with bad address in header}\n"),
    # VIMAGE
    ("p", ("faultdrop",), "\t{:dropped-fault-injection/%ju} "
     "{N:/packet%s dropped by fault injection}\n"),
)

ARP: tuple[Line, ...] = (
    ("p", ("txrequests",), "\t{:sent-requests/%ju} {N:/ARP request%s sent}\n"),
    ("p", ("txerrors",), "\t{:sent-failures/%ju} {N:/ARP request%s failed to sent}\n"),
    ("p3", ("txreplies",), "\t{:sent-replies/%ju} {N:/ARP repl%s sent}\n"),
    ("p", ("rxrequests",), "\t{:received-requests/%ju} {N:/ARP request%s received}\n"),
    ("p3", ("rxreplies",), "\t{:received-replies/%ju} {N:/ARP repl%s received}\n"),
    ("p", ("received",), "\t{:received-packers/%ju} {N:/ARP packet%s received}\n"),
    ("p", ("dropped",), "\t{:dropped-no-entry/%ju} "
     "{N:/total packet%s dropped due to no ARP entry}\n"),
    ("p", ("timeouts",), "\t{:entries-timeout/%ju} {N:/ARP entry%s timed out}\n"),
    ("p", ("dupips",), "\t{:dropped-duplicate-address/%ju} {N:/Duplicate IP%s seen}\n"),
    # VIMAGE
    ("p", ("rxbad",), "\t{:dropped-bad-format/%ju} {N:/ARP packet%s with a bad format}\n"),
    ("p", ("notlocal",), "\t{:dropped-not-local/%ju} {N:/ARP packet%s from senders not "
     "on the receiving interface's networks}\n"),
    ("p3", ("tablefull",), "\t{:dropped-table-full/%ju} "
     "{N:/ARP entr%s refused (interface table full)}\n"),
)

ICMP: tuple[Line, ...] = (
    ("p", ("error",), "\t{:icmp-calls/%lu} {N:/call%s to icmp_error}\n"),
    ("p", ("oldicmp",), "\t{:errors-not-from-message/%lu} "
     "{N:/error%s not generated in response to an icmp message}\n"),
    ("hist", ("outhist",), "output-histogram"),
    ("p", ("badcode",), "\t{:dropped-bad-code/%lu} {N:/message%s with bad code fields}\n"),
    ("p", ("tooshort",), "\t{:dropped-too-short/%lu} "
     "{N:/message%s less than the minimum length}\n"),
    ("p", ("checksum",), "\t{:dropped-bad-checksum/%lu} {N:/message%s with bad checksum}\n"),
    ("p", ("badlen",), "\t{:dropped-bad-length/%lu} {N:/message%s with bad length}\n"),
    ("p1a", ("bmcastecho",), "\t{:dropped-multicast-echo/%lu} "
     "{N:/multicast echo requests ignored}\n"),
    ("p1a", ("bmcasttstamp",), "\t{:dropped-multicast-timestamp/%lu} "
     "{N:/multicast timestamp requests ignored}\n"),
    ("hist", ("inhist",), "input-histogram"),
    ("p", ("reflect",), "\t{:sent-packets/%lu} {N:/message response%s generated}\n"),
    ("pes", ("badaddr",), "\t{:discard-invalid-return-address/%lu} "
     "{N:/invalid return address%s}\n"),
    ("p", ("noroute",), "\t{:discard-no-route/%lu} {N:/no return route%s}\n"),
    # VIMAGE
    ("p", ("ratelimited",), "\t{:errors-rate-limited/%lu} "
     "{N:/error%s not sent because of the rate limit}\n"),
    ("maskrepl", (), "\tICMP address mask responses are "
     "{q:icmp-address-responses/%sabled}\n"),
)

# inet6.c ip6_stats()
IP6: tuple[Line, ...] = (
    ("p", ("total",), "\t{:received-packets/%ju} {N:/total packet%s received}\n"),
    ("p1a", ("toosmall",), "\t{:dropped-below-minimum-size/%ju} "
     "{N:/with size smaller than minimum}\n"),
    ("p1a", ("tooshort",), "\t{:dropped-short-packets/%ju} "
     "{N:/with data size < data length}\n"),
    ("p1a", ("badoptions",), "\t{:dropped-bad-options/%ju} {N:/with bad options}\n"),
    ("p1a", ("badvers",), "\t{:dropped-bad-version/%ju} "
     "{N:/with incorrect version number}\n"),
    ("p", ("fragments",), "\t{:received-fragments/%ju} {N:/fragment%s received}\n"),
    ("p", ("fragdropped",), "\t{:dropped-fragment/%ju} "
     "{N:/fragment%s dropped (dup or out of space)}\n"),
    ("p", ("fragtimeout",), "\t{:dropped-fragment-after-timeout/%ju} "
     "{N:/fragment%s dropped after timeout}\n"),
    ("p", ("fragoverflow",), "\t{:dropped-fragments-overflow/%ju} "
     "{N:/fragment%s that exceeded limit}\n"),
    ("p", ("atomicfrags",), "\t{:atomic-fragments/%ju} {N:/atomic fragment%s}\n"),
    ("p", ("reassembled",), "\t{:reassembled-packets/%ju} "
     "{N:/packet%s reassembled ok}\n"),
    ("p", ("delivered",), "\t{:received-local-packets/%ju} {N:/packet%s for this host}\n"),
    ("p", ("forward",), "\t{:forwarded-packets/%ju} {N:/packet%s forwarded}\n"),
    ("p", ("cantforward",), "\t{:packets-not-forwardable/%ju} "
     "{N:/packet%s not forwardable}\n"),
    ("p", ("redirectsent",), "\t{:sent-redirects/%ju} {N:/redirect%s sent}\n"),
    ("p", ("localout",), "\t{:sent-packets/%ju} {N:/packet%s sent from this host}\n"),
    ("p", ("rawout",), "\t{:send-packets-fabricated-header/%ju} "
     "{N:/packet%s sent with fabricated ip header}\n"),
    ("p", ("odropped",), "\t{:discard-no-mbufs/%ju} "
     "{N:/output packet%s dropped due to no bufs, etc.}\n"),
    ("p", ("noroute",), "\t{:discard-no-route/%ju} "
     "{N:/output packet%s discarded due to no route}\n"),
    ("p", ("fragmented",), "\t{:sent-fragments/%ju} {N:/output datagram%s fragmented}\n"),
    ("p", ("ofragments",), "\t{:fragments-created/%ju} {N:/fragment%s created}\n"),
    ("p", ("cantfrag",), "\t{:discard-cannot-fragment/%ju} "
     "{N:/datagram%s that can't be fragmented}\n"),
    ("p", ("badscope",), "\t{:discard-scope-violations/%ju} "
     "{N:/packet%s that violated scope rules}\n"),
    ("p", ("notmember",), "\t{:multicast-no-join-packets/%ju} "
     "{N:/multicast packet%s which we don't join}\n"),
    ("open", ("mbuf-statistics",), "\t{T:Mbuf statistics}:\n"),
    ("always", ("m1",), "\t\t{:one-mbuf/%ju} {N:/one mbuf}\n"),
    ("always", ("mext1",), "\t\t{:one-extra-mbuf/%ju} {N:one ext mbuf}\n"),
    ("always", ("mext2m",), "\t\t{:two-or-more-extra-mbufs/%ju} "
     "{N:/two or more ext mbuf}\n"),
    ("close", (), ""),
    ("p", ("exthdrtoolong",), "\t{:dropped-header-too-long/%ju} "
     "{N:/packet%s whose headers are not contiguous}\n"),
    ("p", ("nogif",), "\t{:discard-tunnel-no-gif/%ju} "
     "{N:/tunneling packet%s that can't find gif}\n"),
    ("p", ("toomanyhdr",), "\t{:dropped-too-many-headers/%ju} "
     "{N:/packet%s discarded because of too many headers}\n"),
    ("open", ("source-address-selection",), ""),
    ("p", ("sources_none",), "\t{:address-selection-failures/%ju} "
     "{N:/failure%s of source address selection}\n"),
    ("close", (), ""),
    # VIMAGE
    ("p", ("faultdrop",), "\t{:dropped-fault-injection/%ju} "
     "{N:/packet%s dropped by fault injection}\n"),
)

# inet6.c icmp6_stats()
ICMP6: tuple[Line, ...] = (
    ("p", ("error",), "\t{:icmp6-calls/%ju} {N:/call%s to icmp6_error}\n"),
    ("p", ("canterror",), "\t{:errors-not-generated-from-message/%ju} "
     "{N:/error%s not generated in response to an icmp6 message}\n"),
    ("p", ("toofreq",), "\t{:errors-discarded-by-rate-limitation/%ju} "
     "{N:/error%s not generated because of rate limitation}\n"),
    ("hist", ("outhist",), "output-histogram"),
    ("p", ("badcode",), "\t{:dropped-bad-code/%ju} {N:/message%s with bad code fields}\n"),
    ("p", ("tooshort",), "\t{:dropped-too-short/%ju} {N:/message%s < minimum length}\n"),
    ("p", ("checksum",), "\t{:dropped-bad-checksum/%ju} {N:/bad checksum%s}\n"),
    ("p", ("badlen",), "\t{:dropped-bad-length/%ju} {N:/message%s with bad length}\n"),
    ("hist", ("inhist",), "input-histogram"),
    ("title", (), "\t{T:Histogram of error messages to be generated}:\n"),
    ("open", ("errors",), ""),
    ("p1a", ("odst_unreach_noroute",), "\t\t{:no-route/%ju} {N:/no route}\n"),
    ("p1a", ("odst_unreach_admin",), "\t\t{:admin-prohibited/%ju} "
     "{N:/administratively prohibited}\n"),
    ("p1a", ("odst_unreach_beyondscope",), "\t\t{:beyond-scope/%ju} {N:/beyond scope}\n"),
    ("p1a", ("odst_unreach_addr",), "\t\t{:address-unreachable/%ju} "
     "{N:/address unreachable}\n"),
    ("p1a", ("odst_unreach_noport",), "\t\t{:port-unreachable/%ju} "
     "{N:/port unreachable}\n"),
    ("p1a", ("opacket_too_big",), "\t\t{:packet-too-big/%ju} {N:/packet too big}\n"),
    ("p1a", ("otime_exceed_transit",), "\t\t{:time-exceed-transmit/%ju} "
     "{N:/time exceed transit}\n"),
    ("p1a", ("otime_exceed_reassembly",), "\t\t{:time-exceed-reassembly/%ju} "
     "{N:/time exceed reassembly}\n"),
    ("p1a", ("oparamprob_header",), "\t\t{:bad-header/%ju} {N:/erroneous header field}\n"),
    ("p1a", ("oparamprob_nextheader",), "\t\t{:bad-next-header/%ju} "
     "{N:/unrecognized next header}\n"),
    ("p1a", ("oparamprob_option",), "\t\t{:bad-option/%ju} {N:/unrecognized option}\n"),
    ("p1a", ("oredirect",), "\t\t{:redirects/%ju} {N:/redirect}\n"),
    ("p1a", ("ounknown",), "\t\t{:unknown/%ju} {N:unknown}\n"),
    ("p", ("reflect",), "\t{:reflect/%ju} {N:/message response%s generated}\n"),
    ("p", ("nd_toomanyopt",), "\t{:too-many-nd-options/%ju} "
     "{N:/message%s with too many ND options}\n"),
    ("p", ("nd_badopt",), "\t{:bad-nd-options/%ju} {N:/message%s with bad ND options}\n"),
    ("p", ("badns",), "\t{:bad-neighbor-solicitation/%ju} "
     "{N:/bad neighbor solicitation message%s}\n"),
    ("p", ("badna",), "\t{:bad-neighbor-advertisement/%ju} "
     "{N:/bad neighbor advertisement message%s}\n"),
    ("p", ("badrs",), "\t{:bad-router-solicitation/%ju} "
     "{N:/bad router solicitation message%s}\n"),
    ("p", ("badra",), "\t{:bad-router-advertisement/%ju} "
     "{N:/bad router advertisement message%s}\n"),
    ("p", ("badredirect",), "\t{:bad-redirect/%ju} {N:/bad redirect message%s}\n"),
    ("close", (), ""),
    ("p", ("pmtuchg",), "\t{:path-mtu-changes/%ju} {N:/path MTU change%s}\n"),
    # VIMAGE
    ("p3", ("ndtablefull",), "\t{:neighbor-entries-refused/%ju} "
     "{N:/neighbor entr%s refused (interface table full)}\n"),
)

# protocol name -> its lines; the others (esp, divert) are printed from their STAT_LINES
TABLES = MappingProxyType({"tcp": TCP, "udp": UDP, "ip": IP, "arp": ARP, "icmp": ICMP,
                           "ip6": IP6, "icmp6": ICMP6})


def _compiled(table: tuple[Line, ...]) -> tuple[tuple[str, tuple[str, ...], object], ...]:
    """The table with its format strings parsed once (a `hist` line's is a list name)."""
    return tuple((kind, fields, fmt if kind == "hist" or not fmt else compile_format(fmt))
                 for kind, fields, fmt in table)


_COMPILED = MappingProxyType({name: _compiled(table) for name, table in TABLES.items()})

# the fields each protocol's table uses (what `-z` zeroes besides the histograms)
_SUFFIX = MappingProxyType({"p": lambda n: "" if n == 1 else "s",
                            "p2": lambda n: "" if n == 1 else "s",
                            "p2a": lambda n: "" if n == 1 else "s",
                            "p3": lambda n: "y" if n == 1 else "ies",
                            "pes": lambda n: "" if n == 1 else "es"})


def emit_protocol(xo: Xo, vnet: Vnet, proto: Protocol, sflag: int) -> None:
    """One protocol's block: `name:` then its lines, in the container FreeBSD opens."""
    stats = getattr(vnet, proto.slot).stats  # type: ignore[arg-type]
    table = _COMPILED.get(proto.name)
    xo.open_container(proto.name)
    xo.emit("{T:/%s}:\n", proto.name)
    if table is None:
        _emit_generic(xo, stats, proto.stats, sflag)
    else:
        for kind, fields, fmt in table:
            if kind == "open":
                xo.open_container(fields[0])
                if fmt:
                    xo.emit(fmt)
            elif kind == "close":
                xo.close_container()
            else:
                _emit_line(xo, vnet, stats, kind, fields, fmt, sflag)
    xo.close_container()


def _emit_line(xo: Xo, vnet: Vnet, stats: object, kind: str, fields: tuple[str, ...],
               fmt: Any, sflag: int) -> None:
    values = [getattr(stats, f) for f in fields]
    if kind == "hist":
        _histogram(xo, stats, fields[0], fmt)
    elif kind == "states":
        _tcp_states(xo, vnet, sflag)
    elif kind == "maskrepl":
        xo.emit(fmt, "en" if _maskrepl(vnet) else "dis")
    elif kind == "delivered":  # udp_stats() computes it
        got = stats.ipackets - sum(getattr(stats, f) for f in (  # type: ignore[attr-defined]
            "hdrops", "badlen", "badsum", "noport", "noportbcast", "fullsock"))
        if got or sflag <= 1:
            xo.emit(fmt, got)
    elif kind == "title":
        xo.emit(fmt)
    elif kind == "always":  # printed whatever -s -s says (inet6.c's mbuf statistics)
        xo.emit(fmt, values[0])
    elif kind == "newline_if":
        if values[0] or sflag <= 1:
            xo.emit(fmt)
    elif any(values) or sflag <= 1:
        xo.emit(fmt, *_args(kind, values))


def _maskrepl(vnet: Vnet) -> int:
    """net.inet.icmp.maskrepl where the stack has it; vimage answers no address mask
    requests, which FreeBSD's default (0) prints as `disabled`."""
    from vimage.sysctl import SysctlError

    try:
        return int(vnet.sysctl("net.inet.icmp.maskrepl"))
    except SysctlError:
        return 0


def _args(kind: str, values: list[int]) -> list[object]:
    if kind == "p1a":
        return [values[0]]
    if kind == "p2":
        return [values[0], _SUFFIX[kind](values[0]), values[1], _SUFFIX[kind](values[1])]
    if kind == "p2a":
        return [values[0], _SUFFIX[kind](values[0]), values[1]]
    return [values[0], _SUFFIX[kind](values[0])]


def _histogram(xo: Xo, stats: object, attr: str, list_name: str) -> None:
    """icmp_stats()'s and icmp6_stats()'s Output and Input histograms: the types seen,
    by the name of inet.c's icmpnames[] or inet6.c's icmp6names[] (`#N` where those
    have no word)."""
    hist = getattr(stats, attr)
    names = getattr(stats, "TYPE_NAMES", icmp.TYPE_NAMES)
    counts = sorted(hist.items()) if isinstance(hist, dict) else list(enumerate(hist))
    rows = [(t, n) for t, n in counts if n]
    if not rows:
        return
    xo.open_list(list_name)
    xo.emit("\t{T:Output histogram}:\n" if attr == "outhist" else "\t{T:Input histogram}:\n")
    for type_, count in rows:
        xo.open_instance(list_name)
        name = (names[type_] if type_ < len(names) else "") or f"#{type_}"
        xo.emit("\t\t{k:name/%s}: {:count/%lu}\n", name, count)
        xo.close_instance()
    xo.close_list()


# tcp_fsm.h's tcpstates[], the order of `TCP connection count by state`
TCP_STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
              "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT")


def _tcp_states(xo: Xo, vnet: Vnet, sflag: int) -> None:
    """tcp_stats()'s count of connections by state (net.inet.tcp.states)."""
    counts = dict.fromkeys(TCP_STATES, 0)
    for tcb in vnet.tcp.tcbs():
        if tcb.state != tcp.CLOSED and tcb.state_name in counts:
            counts[tcb.state_name] += 1
    xo.open_container("TCP connection count by state")
    xo.emit("{T:/TCP connection count by state}:\n")
    for state, count in counts.items():
        if sflag > 1 and count == 0:
            continue
        xo.emit(f"\t{{:{state}/%ju}} {{Np:/connection ,connections}} in {state} state\n",
                count)
    xo.close_container()


def _emit_generic(xo: Xo, stats: object, lines: tuple[tuple[str, str], ...],
                  sflag: int) -> None:
    """A protocol without an inet.c table here (esp, divert): its STAT_LINES, the JSON
    key being the counter's name."""
    from vimage.cli.netstat import counted  # the plural rule of STAT_LINES

    for attr, fmt in lines:
        value = getattr(stats, attr)
        if value or sflag <= 1:
            at = fmt.index("{}")
            rest = counted(fmt, value)[at + len(str(value)):]
            xo.emit(fmt[:at] + "\t{:" + attr + "/%ju}" + rest + "\n", value)


def zero(vnet: Vnet, proto: Protocol) -> None:
    """netstat -z: the protocol's counters and histograms back to 0."""
    stats = getattr(vnet, proto.slot).stats  # type: ignore[arg-type]
    for name in type(stats).names:
        setattr(stats, name, 0)
    for hist in (getattr(stats, "inhist", None), getattr(stats, "outhist", None)):
        if isinstance(hist, dict):
            hist.clear()
        elif hist is not None:
            hist[:] = [0] * len(hist)
