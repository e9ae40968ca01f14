using esg from '../db/schema';

// Server-driven paging: at most 500 rows a response, 200 when the client asks for no
// $top, so reads of a few thousand rows cross many pages (@odata.nextLink / __next).
@requires: 'authenticated-user'
@cds.query.limit: { default: 200, max: 500 }
service EsgService {
  entity EnergyReadings as projection on esg.EnergyReadings;
  entity Sites          as projection on esg.Sites;
  entity WaterUse       as projection on esg.WaterUse;
}
