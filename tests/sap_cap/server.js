// Binds the CAP server to 127.0.0.1 only (cds-serve listens on every interface).
// The OData v2 adapter (/odata/v2/...) mounts itself as a cds plugin.
const cds = require('@sap/cds')

cds.on('bootstrap', (app) => {
  const listen = app.listen.bind(app)
  app.listen = (port, ...rest) => listen(port, '127.0.0.1', ...rest)
})

module.exports = cds.server
