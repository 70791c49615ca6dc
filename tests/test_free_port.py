"""launcher.free_port: ports handed out within one process never collide."""
import socket
import threading

from pylons_tcjson_template.devtyrant.launcher import free_port


def test_a_thousand_calls_give_a_thousand_ports():
    # Closed probes give their port back to the kernel, which hands it out
    # again: before ports were remembered, 1000 calls repeated about 30.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_threads_calling_at_once_get_distinct_ports():
    ports = []

    def take():
        for _ in range(100):
            ports.append(free_port())

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ports) == 400
    assert len(set(ports)) == len(ports)


def test_the_port_is_free_to_listen_on():
    port = free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(('127.0.0.1', port))
        server.listen(1)
    finally:
        server.close()
