package ivclms.hapi;

import ca.uhn.fhir.batch2.jobs.bulkmodify.reindex.ReindexProvider;
import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.provider.DiffProvider;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.ResponseHighlighterInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.sql.DataSource;

/**
 * Wires HAPI FHIR's published JPA server configuration (the same Spring config classes that
 * hapi-fhir-jpaserver-starter / the hapiproject/hapi image use) for FHIR R4 on H2.
 *
 * <ul>
 *   <li>{@link JpaR4Config}: R4 FhirContext, a DAO + resource provider for every R4 resource type,
 *       system DAO/provider (transaction/batch, $meta, ...), search, and the JPA validation support
 *       chain (default R4 definitions + StructureDefinitions/ValueSets/CodeSystems stored in the DB),
 *       which backs {@code $validate}.</li>
 *   <li>{@link HapiJpaConfig}: search/paging/resource-count support beans.</li>
 *   <li>{@link JpaBatch2Config} + {@link Batch2JobsConfig}: batch2 job framework ($export, $reindex, ...).</li>
 *   <li>{@link SubscriptionChannelConfig}: in-memory message broker that batch2 uses for work notifications.</li>
 * </ul>
 */
@Configuration
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	SubscriptionChannelConfig.class,
	ThreadPoolFactoryConfig.class
})
public class HapiServerConfig {

	@Bean
	public JpaStorageSettings jpaStorageSettings(
			@Value("${ivclms.hapi.reuse-cached-search-results-millis:0}") long theReuseCachedSearchMillis) {
		JpaStorageSettings settings = new JpaStorageSettings();
		// Defaults aligned with hapi-fhir-jpaserver-starter's application.yaml (the docker image).
		settings.setAllowContainsSearches(true);
		settings.setAllowExternalReferences(false);
		settings.setAllowMultipleDelete(false);
		settings.setExpungeEnabled(true);
		settings.setDeleteEnabled(true);
		settings.setFilterParameterEnabled(true);
		settings.setDefaultSearchParamsCanBeOverridden(true);
		settings.setEnforceReferentialIntegrityOnWrite(true);
		settings.setEnforceReferentialIntegrityOnDelete(true);
		settings.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ALPHANUMERIC);
		settings.setSearchPreFetchThresholds(List.of(13, 503, 2003, -1));
		settings.setTreatReferencesAsLogical(Set.of(
				"http://terminology.hl7.org/*", "https://terminology.hl7.org/*",
				"http://snomed.info/*", "https://snomed.info/*",
				"http://unitsofmeasure.org/*", "https://unitsofmeasure.org/*",
				"http://loinc.org/*", "https://loinc.org/*"));
		// Test harness: do not serve cached search results (starter default is 60000 ms, which makes
		// "create then search" flaky). 0 => disabled.
		settings.setReuseCachedSearchResultsForMillis(theReuseCachedSearchMillis > 0 ? theReuseCachedSearchMillis : null);
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean
	public DatabaseBinaryContentStorageSvcImpl binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings,
			DataSource theDataSource) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(theDataSource);
		emf.setJpaPropertyMap(Map.ofEntries(
				Map.entry("hibernate.dialect", "ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect"),
				Map.entry("hibernate.hbm2ddl.auto", "update"),
				Map.entry("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner"),
				Map.entry("hibernate.implicit_naming_strategy",
						"org.springframework.boot.orm.jpa.hibernate.SpringImplicitNamingStrategy"),
				Map.entry("hibernate.physical_naming_strategy",
						"org.hibernate.boot.model.naming.CamelCaseToUnderscoresNamingStrategy"),
				Map.entry("hibernate.jdbc.batch_size", "20"),
				Map.entry("hibernate.format_sql", "false"),
				Map.entry("hibernate.show_sql", "false"),
				Map.entry("hibernate.cache.use_query_cache", "false"),
				Map.entry("hibernate.cache.use_second_level_cache", "false"),
				Map.entry("hibernate.cache.use_structured_entries", "false"),
				Map.entry("hibernate.cache.use_minimal_puts", "false"),
				Map.entry("hibernate.search.enabled", "false")));
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		return new JpaTransactionManager(theEntityManagerFactory);
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> theSystemDao,
			ResourceProviderFactory theResourceProviders,
			IJpaSystemProvider theSystemProvider,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider,
			ValueSetOperationProvider theValueSetOperationProvider,
			BulkDataExportProvider theBulkDataExportProvider,
			ReindexProvider theReindexProvider,
			DiffProvider theDiffProvider) {
		FhirContext ctx = theSystemDao.getContext();
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());

		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(theResourceProviders.createProviders()); // all R4 resource types
		server.registerProvider(theSystemProvider); // transaction/batch, $meta, $expunge, ...
		server.registerProvider(theValueSetOperationProvider); // $expand, $validate-code, ...
		server.registerProvider(theBulkDataExportProvider); // $export
		server.registerProvider(theReindexProvider);
		server.registerProvider(theDiffProvider);

		JpaCapabilityStatementProvider capabilityStatement = new JpaCapabilityStatementProvider(
				server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport);
		capabilityStatement.setImplementationDescription("HAPI FHIR R4 Server (ivclms test harness)");
		server.setServerConformanceProvider(capabilityStatement);

		server.setPagingProvider(thePagingProvider);
		server.setDefaultPrettyPrint(true);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.registerInterceptor(new ResponseHighlighterInterceptor());
		return server;
	}
}
