import AegisProtocol

/// CLIENT HELP, COMMAND HELP and CONFIG HELP, in redis-server's shape (a
/// header line, two lines per subcommand, HELP last; all status replies):
/// error replies for unknown subcommands say "Try CLIENT HELP.", so the
/// help must exist. Each list names only the subcommands this node answers;
/// a subcommand added to a command belongs in its list.
enum IntrospectionHelp {
    enum Topic { case client, command, config }

    static func lines(_ topic: Topic) -> [String] {
        switch topic {
        case .client:
            return [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "INFO", "    Return information about the current client connection.",
                "KILL <ip:port>", "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are: ID <client-id>, TYPE normal, USER default, ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO).",
                "LIST [TYPE normal] [ID <client-id> [<client-id> ...]]", "    Return information about client connections.",
                "NO-EVICT (ON|OFF)", "    Protect the current client connection from eviction (no client is ever evicted here).",
                "REPLY (ON|OFF|SKIP)", "    Control the replies sent to the current connection.",
                "SETINFO <option> <value>",
                "    Set client meta attr. Options are:",
                "    * LIB-NAME: the client lib name.",
                "    * LIB-VER: the client lib version.",
                "SETNAME <name>", "    Assign the name <name> to the current connection.",
            ]
        case .command:
            return [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)", "    Return details about all commands.",
                "COUNT", "    Return the total number of commands in this server.",
                "INFO [<command-name> ...]", "    Return details about multiple commands.",
                "DOCS [<command-name> ...]", "    Return documentation details about multiple commands.",
                "GETKEYS <full-command>", "    Return the keys from a full Redis command.",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
                "    Return a list of all commands in this server.",
            ]
        case .config:
            return [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>", "    Set the configuration <directive> to <value> (the settings SIGHUP reloads).",
                "RESETSTAT", "    Reset statistics reported by the INFO command.",
            ]
        }
    }

    static func write(_ topic: Topic, into out: WireBuffer) {
        writeLines(lines(topic), into: out)
    }

    /// The same shape for the commands whose subcommands are listed where
    /// they are run (OBJECT, MEMORY, SLOWLOG, LATENCY).
    static func write(command: String, _ lines: [String], into out: WireBuffer) {
        writeLines(["\(command) <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"] + lines, into: out)
    }

    private static func writeLines(_ lines: [String], into out: WireBuffer) {
        let body = lines + ["HELP", "    Prints this help."]
        RESPWriter.arrayHeader(body.count, into: out)
        for var line in body {
            line.withUTF8 { RESPWriter.simpleString(bytes: UnsafeRawBufferPointer($0), into: out) }
        }
    }
}
