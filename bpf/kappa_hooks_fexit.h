/* Where the sock_send_length / sock_recv_length tracepoints are missing (they arrived in 6.3;
 * EKS AL2023 and GKE COS run 6.1): the same calls, at the exit of the functions
 * sock_sendmsg() and sock_recvmsg() hand every IPv4 and IPv6 socket's send and receive to (the
 * tracepoints fire right after those calls return, with the same socket, length and flags).
 * fexit programs need BTF and BPF trampolines (x86-64 from 5.5). capture loads these instead of
 * the tracepoint programs when the kernel's BTF has no btf_trace_sock_send_length. */
#ifndef KAPPA_HOOKS_FEXIT_H
#define KAPPA_HOOKS_FEXIT_H

SEC("fexit/inet_sendmsg")
int BPF_PROG(kappa_inet_send_exit, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return on_sock_send(sock->sk, ret);
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(kappa_inet6_send_exit, struct socket *sock, struct msghdr *msg, size_t size, int ret)
{
	return on_sock_send(sock->sk, ret);
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(kappa_inet_recv_exit, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return on_sock_recv(sock->sk, ret, flags);
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(kappa_inet6_recv_exit, struct socket *sock, struct msghdr *msg, size_t size, int flags, int ret)
{
	return on_sock_recv(sock->sk, ret, flags);
}

#endif
