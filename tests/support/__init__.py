"""Helpers shared by the tests that run the bridge against real servers.

- `waits`: `wait_for` (poll an observable state, fail naming it, with the logs of the processes
  that must stay up), `check_alive` (a process exit nobody asked for is a failure).
- `topics`: reading topics to their end (`read_to_end`, the bridge's data topics with
  `data_records`), and decoding records independently of the project's decoder (`Schemas`).
- `workloads`: the source workloads the end-to-end, fault and chaos tests drive.
"""
