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
            ]
        case .config:
            return [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
            ]
        }
    }

    static func write(_ topic: Topic, into out: WireBuffer) {
        let body = lines(topic) + ["HELP", "    Prints this help."]
        RESPWriter.arrayHeader(body.count, into: out)
        for var line in body {
            line.withUTF8 { RESPWriter.simpleString(bytes: UnsafeRawBufferPointer($0), into: out) }
        }
    }
}
