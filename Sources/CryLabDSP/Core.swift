// Random crops draw from CryLabCore's seeded generator.
@_exported import CryLabCore
