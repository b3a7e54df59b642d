import Testing
@testable import AegisConfig

/// The circuit-breaker policy keys: defaults equal to the policy the code
/// used before they existed, every layer, and clear errors naming the key.
@Suite("breaker_* keys")
struct BreakerKeyTests {
    @Test func defaultsAreTheFormerCodeDefaults() {
        let config = AegisConfig.defaults
        #expect(config.breakerErrorRate == 0.5)
        #expect(config.breakerMinCalls == 20)
        #expect(config.breakerWindow == .seconds(10))
        #expect(config.breakerCooldown == .seconds(30))
        #expect(config.breakerHalfOpenTrials == 3)
    }

    @Test func everyLayerSetsThem() throws {
        let dir = TempDir()
        let fromFile = try load(json: """
            {"breaker_error_rate": 0.2, "breaker_min_calls": 5, "breaker_window": "30s",
             "breaker_cooldown": "2m", "breaker_half_open_trials": 1}
            """, in: dir).config
        #expect(fromFile.breakerErrorRate == 0.2)
        #expect(fromFile.breakerMinCalls == 5)
        #expect(fromFile.breakerWindow == .seconds(30))
        #expect(fromFile.breakerCooldown == .seconds(120))
        #expect(fromFile.breakerHalfOpenTrials == 1)

        let fromEnvironment = try load(env: ["AEGIS_BREAKER_ERROR_RATE": "1", "AEGIS_BREAKER_WINDOW": "1h"]).config
        #expect(fromEnvironment.breakerErrorRate == 1)
        #expect(fromEnvironment.breakerWindow == .seconds(3600))

        // A flag wins over the file.
        let layered = try load(json: #"{"breaker_error_rate": 0.9}"#, args: ["--breaker-error-rate", "0.1"], in: dir)
        #expect(layered.config.breakerErrorRate == 0.1)
        #expect(layered.source(of: "breaker_error_rate") == .flag("--breaker-error-rate"))
    }

    @Test func theyAreReloadable() {
        for key in ["breaker_error_rate", "breaker_min_calls", "breaker_window", "breaker_cooldown", "breaker_half_open_trials"] {
            #expect(AegisConfig.reloadableKeys.contains(key), "\(key)")
            #expect(!AegisConfig.restartRequiredKeys.contains(key), "\(key)")
        }
    }

    @Test(arguments: [
        (#"{"breaker_error_rate": 0}"#, "breaker_error_rate", "expected a number greater than 0 and at most 1, got 0"),
        (#"{"breaker_error_rate": 1.5}"#, "breaker_error_rate", "expected a number greater than 0 and at most 1, got 1.5"),
        (#"{"breaker_error_rate": "50%"}"#, "breaker_error_rate", #"got a string ("50%")"#),
        (#"{"breaker_min_calls": 0}"#, "breaker_min_calls", "expected a positive integer, got 0"),
        (#"{"breaker_min_calls": 2.5}"#, "breaker_min_calls", "not a whole number"),
        (#"{"breaker_half_open_trials": 0}"#, "breaker_half_open_trials", "expected a positive integer, got 0"),
        (#"{"breaker_window": "1500ms"}"#, "breaker_window", #"expected a whole number of seconds from 1s to 1h, such as "10s", got a string ("1500ms")"#),
        (#"{"breaker_window": "0s"}"#, "breaker_window", "expected a whole number of seconds from 1s to 1h"),
        (#"{"breaker_window": "2h"}"#, "breaker_window", "expected a whole number of seconds from 1s to 1h"),
        (#"{"breaker_window": 10}"#, "breaker_window", "got the bare number 10"),
        (#"{"breaker_cooldown": "0s"}"#, "breaker_cooldown", "expected a duration greater than zero"),
        (#"{"breaker_cooldown": "soon"}"#, "breaker_cooldown", "expected a duration such as"),
    ])
    func badFileValue(json: String, key: String, fragment: String) throws {
        let dir = TempDir()
        let error = try #require(loadError(json: json, in: dir))
        #expect(error.description.hasPrefix("config: \(key) in \(dir.path)/config.json: "), "\(error)")
        #expect(error.description.contains(fragment), "\(error)")
        #expect(error.key == key)
    }

    @Test(arguments: [
        ("--breaker-error-rate", "-0.1", "expected a number greater than 0 and at most 1"),
        ("--breaker-error-rate", "high", #"got "high""#),
        ("--breaker-min-calls", "many", "expected a positive integer"),
        ("--breaker-window", "10", "a number has no unit"),
        ("--breaker-window", "2.5s", "expected a whole number of seconds from 1s to 1h"),
        ("--breaker-cooldown", "-5s", "it is negative"),
        ("--breaker-half-open-trials", "0", "expected a positive integer, got \"0\""),
    ])
    func badFlagOrEnvironmentValue(flag: String, value: String, fragment: String) throws {
        let key = String(flag.dropFirst(2)).replacing("-", with: "_")
        let fromFlag = try #require(loadError(args: [flag + "=" + value]))
        #expect(fromFlag.description.hasPrefix("config: \(key) in \(flag): expected "), "\(fromFlag)")
        #expect(fromFlag.description.contains(fragment), "\(fromFlag)")
        let variable = "AEGIS_" + key.uppercased()
        let fromEnvironment = try #require(loadError(env: [variable: value]))
        #expect(fromEnvironment.description == fromFlag.description.replacing("in \(flag):", with: "in \(variable):"))
    }
}
