namespace esg;

// Energy meter readings of sites: an ESG-like entity with an integer key, a decimal
// quantity, a date and a change timestamp (set by CAP on insert and on update, as
// S/4HANA's LastChangeDateTime is).
entity EnergyReadings {
  key ID          : Integer;
      site        : String(40);
      meter       : String(20);
      readingDate : Date;
      kWh         : Decimal(12, 3);
      renewable   : Boolean;
      note        : String(200);
      modifiedAt  : Timestamp @cds.on.insert: $now  @cds.on.update: $now;
}

// Sites with a text key (quotes and non-ASCII letters in keys and values).
entity Sites {
  key code      : String(20);
      name      : String(100);
      country   : String(2);
      floorArea : Decimal(10, 2);
      employees : Integer64;
      modifiedAt : Timestamp @cds.on.insert: $now  @cds.on.update: $now;
}

// Monthly water use with a composite key (site, period).
entity WaterUse {
  key site       : String(20);
  key period     : String(7);
      cubicMeters : Decimal(14, 4);
      modifiedAt : Timestamp @cds.on.insert: $now  @cds.on.update: $now;
}
