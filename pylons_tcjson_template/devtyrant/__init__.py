"""A Tokyo Tyrant protocol server for development and tests (tcjson-tyrant).

Modules: `protocol` (request framing, response bytes), `storage` (in-memory
and Tokyo Cabinet .tch stores), `commands` (what each command does),
`mask` (-mask/-unmask: the commands refused), `ulog` (the update log),
`ulogfile` (one update log file, damage told apart from records),
`replication` (master feeds and the slave's link, as ttserver 1.1.41
replicates), `events` (the log on stderr), `server` (the event loop and
the command line), `launcher` (start ttserver or this server as a child
process), `paster_tyrant` (what a generated project's ``paster tyrant``
does).  Generated projects use it through their ``dev`` extra (this
package): it serves development and tests, never a deployed application.
"""
